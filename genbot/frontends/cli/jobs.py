"""``genbot retrain``, ``genbot worker`` and ``genbot jobs list | show | logs | cancel``: background fine-tuning.

These commands open the service without loading any model (``serving=False``): queueing,
inspecting and running jobs need the database and the settings only, and training itself runs
in a child process the worker starts.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer

from genbot.frontends.cli.common import emit_json, friendly_errors, setup_logging, stop_on_signals, with_service

app = typer.Typer()
jobs_app = typer.Typer(help="Background jobs: list, show, logs, cancel.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
FOLLOW_POLL_S = 1.0

# Job options shared by `retrain` and `schedule add` (same names as `genbot train`).
Source = Annotated[str, typer.Option("--from", help="active | scratch | a version number")]
Steps = Annotated[int | None, typer.Option(help="budget: optimizer steps")]
Epochs = Annotated[float | None, typer.Option(help="budget: passes over the train split")]
Seconds = Annotated[float | None, typer.Option(help="budget: training seconds")]
Cell = Annotated[str | None, typer.Option(help="rnn | lstm | gru (with --from scratch)")]
Layers = Annotated[int | None, typer.Option(help="recurrent layers (with --from scratch)")]
Hidden = Annotated[int | None, typer.Option(help="units per layer (with --from scratch)")]
Emb = Annotated[int | None, typer.Option(help="embedding size (with --from scratch)")]
Dropout = Annotated[float | None, typer.Option(help="dropout")]
Block = Annotated[int | None, typer.Option(help="truncated-BPTT window in chars")]
Batch = Annotated[int | None, typer.Option(help="windows per step")]
Lr = Annotated[float | None, typer.Option(help="peak learning rate")]
Warmup = Annotated[int | None, typer.Option(help="linear warmup steps")]
WeightDecay = Annotated[float | None, typer.Option(help="AdamW weight decay")]
GradClip = Annotated[float | None, typer.Option(help="max gradient norm")]
CarryState = Annotated[bool | None, typer.Option("--carry-state/--no-carry-state", help="carry hidden state")]
Bf16 = Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast")]
Device = Annotated[str | None, typer.Option(help="cpu | cuda")]
EvalEvery = Annotated[int | None, typer.Option(help="steps between evaluations (checkpoints)")]
Seed = Annotated[int | None, typer.Option(help="random seed")]
SaveDtype = Annotated[str | None, typer.Option(help="float32 | float16 | bfloat16 weights")]
Nproc = Annotated[
    int | None,
    typer.Option(
        help="training processes (torchrun ranks, e.g. GPUs; default: [jobs] nproc, at most [jobs] max_nproc)"
    ),
]
MaxAttempts = Annotated[int | None, typer.Option(help="claims before the job fails (default: [jobs] max_attempts)")]


def retrain_request(model: str, corpus: str, source: str, values: dict[str, Any]) -> Any:
    """A RetrainRequest from a command's options (only those given), checked before the database opens."""
    from genbot.jobs.spec import HYPERPARAMETERS, RetrainRequest
    from genbot.training.options import TrainingOptions

    given = {name: values[name] for name in HYPERPARAMETERS if values.get(name) is not None}
    options = TrainingOptions.parse(given).given()  # the same schema the API and schedules use
    budget = {name: values[name] for name in ("steps", "epochs", "seconds")}
    return RetrainRequest(
        model=model, corpus=corpus, source=source, options=options, max_attempts=values["max_attempts"], **budget
    )


# ----- retrain --------------------------------------------------------------------------------


@app.command()
@friendly_errors
def retrain(
    model: Annotated[str, typer.Argument(help="the model to fine-tune (or retrain from scratch)")],
    corpus: Annotated[str, typer.Option(help="registered corpus name (genbot corpus add)")],
    source: Source = "active",
    steps: Steps = None, epochs: Epochs = None, seconds: Seconds = None,
    cell: Cell = None, layers: Layers = None, hidden: Hidden = None, emb: Emb = None,
    dropout: Dropout = None, block: Block = None, batch: Batch = None, lr: Lr = None, warmup: Warmup = None,
    weight_decay: WeightDecay = None, grad_clip: GradClip = None, carry_state: CarryState = None,
    bf16: Bf16 = None, device: Device = None, eval_every: EvalEvery = None, seed: Seed = None,
    save_dtype: SaveDtype = None, nproc: Nproc = None, max_attempts: MaxAttempts = None,
    wait: Annotated[bool, typer.Option(help="follow progress until the job ends; exit 1 unless it succeeded")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the job as JSON")] = False,
) -> None:  # fmt: skip
    """Queue a background fine-tune of MODEL on a registered corpus (run it with `genbot worker`)."""
    request = retrain_request(model, corpus, source, locals())

    async def body(service: Any) -> Any:
        job = await service.jobs.retrain(request)
        _print_job_line(job, as_json, queued=True)
        return await _follow_progress(service, job.id) if wait else job

    job = with_service(body, serving=False)
    if wait:
        _print_job(job, as_json)
        if str(job.status) != "succeeded":
            raise typer.Exit(1)


async def _follow_progress(service: Any, job_id: int) -> Any:
    """Print a progress line whenever it changes until the job finishes; returns the final job."""
    last = ""
    while True:
        job = await service.jobs.get(job_id)
        line = _progress_line(job)
        if line != last:
            typer.echo(line, err=True)
            last = line
        if job.finished:
            return job
        await asyncio.sleep(FOLLOW_POLL_S)


# ----- worker ---------------------------------------------------------------------------------


@app.command()
@friendly_errors
def worker(
    once: Annotated[bool, typer.Option(help="run at most one job, then exit")] = False,
    poll: Annotated[float | None, typer.Option(help="seconds between looks at the queue when idle")] = None,
    lease: Annotated[float | None, typer.Option(help="lease length in seconds")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads of each training process")] = None,
    nproc: Annotated[int | None, typer.Option(help="training processes per job unless it asks (torchrun)")] = None,
) -> None:
    """Run queued jobs, one at a time, until Ctrl-C or SIGTERM (start several for more at once)."""

    async def body(service: Any) -> int:
        setup_logging(service.settings.log_level)
        stop = stop_on_signals()
        overrides = {"lease_s": lease, "poll_s": poll, "threads": threads, "nproc": nproc}
        ran: int = await service.jobs.worker(**overrides).run(stop, once=once)
        return ran

    ran = with_service(body, serving=False)
    typer.echo(f"worker stopped after {ran} job(s)", err=True)


# ----- jobs list | show | logs | cancel -------------------------------------------------------


@jobs_app.command("list")
@friendly_errors
def jobs_list(
    status: Annotated[str | None, typer.Option(help="queued | running | succeeded | failed | cancelled")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Jobs, newest first."""
    for job in with_service(lambda service: service.jobs.list(status=status, model=model, limit=limit), serving=False):
        _print_job_line(job, as_json)


@jobs_app.command("show")
@friendly_errors
def jobs_show(
    job_id: Annotated[int, typer.Argument(help="job id")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Status, progress, ETA, latest sample, metrics, loss-curve path and error of a job."""
    _print_job(with_service(lambda service: service.jobs.get(job_id), serving=False), as_json)


@jobs_app.command("logs")
@friendly_errors
def jobs_logs(
    job_id: Annotated[int, typer.Argument(help="job id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="every line as a JSON object with its metadata")] = False,
) -> None:
    """A job's log: the trainer's JSON lines, worker messages (#) and stderr (!)."""

    async def body(service: Any) -> None:
        after = 0
        while True:
            job = await service.jobs.get(job_id)  # read first: events up to the final state are then stored
            for event in await service.jobs.events(job_id, after):
                _print_event(event, as_json)
                after = event.id
            if not follow or job.finished:
                return
            await asyncio.sleep(FOLLOW_POLL_S)

    with_service(body, serving=False)


@jobs_app.command("cancel")
@friendly_errors
def jobs_cancel(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """Cancel a queued job, or stop a running one within a few seconds."""
    job = with_service(lambda service: service.jobs.cancel(job_id), serving=False)
    state = "cancelled" if job.finished else "cancel requested; its worker stops it within a few seconds"
    typer.echo(f"job {job.id}: {state}")


# ----- rendering ------------------------------------------------------------------------------


def _print_job_line(job: Any, as_json: bool, queued: bool = False) -> None:
    """One line (or JSON object) per job."""
    if as_json:
        emit_json(job)
        return
    if queued:
        typer.echo(f"job {job.id} queued: {job.kind} {job.model} on {job.corpus} (from {_origin(job)})")
        return
    progress = job.progress
    where = f"step {progress.get('step', 0)}/{progress.get('total_steps') or '?'}" if progress else ""
    version = f"→ v{job.result_version}" if job.result_version else ""
    typer.echo(f"#{job.id:<4} {job.status:<9} {job.model:<14} {job.corpus or '-':<14} {where:<14} "
               f"val {_num(progress.get('val_loss'))} {version} {when(job.created_at)}")  # fmt: skip


def _print_job(job: Any, as_json: bool) -> None:
    """Everything about one job."""
    if as_json:
        emit_json(job)
        return
    p, m = job.progress, job.metrics
    rows = [
        ("job", f"{job.id} {job.kind} {job.model}: {job.status}"),
        ("corpus", f"{job.corpus} (from {_origin(job)})"),
        ("attempts", f"{job.attempts} of {job.max_attempts}" + (f", by {job.lease_owner}" if job.lease_owner else "")),
        ("created", when(job.created_at)),
        ("started", when(job.started_at) if job.started_at else None),
        ("finished", when(job.finished_at) if job.finished_at else None),
        ("progress", _progress_line(job)),
        ("sample", json.dumps(p["sample"], ensure_ascii=False)[:400] if p.get("sample") else None),
        ("metrics", _metrics_line(m) if m else None),
        ("loss curve", m.get("loss_curve")),
        ("error", job.error),
    ]  # fmt: skip
    for label, value in rows:
        if value:
            typer.echo(f"{label:>10}  {value}")


def _progress_line(job: Any) -> str:
    """'job 3 running: step 20/60 (33%) · epoch 0.28 · train 3.58 · val 3.60 · 96,000 chars/s · ETA 3 s'."""
    p = job.progress
    parts = [f"job {job.id} {job.status}"]
    if "step" in p:
        total = p.get("total_steps")
        parts.append(f"step {p['step']}" + (f"/{total}" if total else "") + _percent(p.get("progress")))
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']:.2f}")
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        if p.get(key) is not None:
            parts.append(f"{label} {_num(p[key])}")
    if p.get("chars_per_s"):
        parts.append(f"{p['chars_per_s']:,} chars/s")
    if p.get("eta") is not None and job.status == "running":
        parts.append(f"ETA {p['eta']:.0f} s")
    return " · ".join(parts)


def _metrics_line(m: dict[str, Any]) -> str:
    """Final figures of a succeeded job."""
    losses = m.get("losses", {})
    parts = [f"val_block {losses.get('val_block')}", f"val_stateful {losses.get('val_stateful')}"]
    if "version" in m:
        parts.append(f"version {m['version']} ({'activated' if m.get('activated') else 'not activated'})")
    if m.get("added_chars"):
        parts.append(f"added chars {''.join(m['added_chars'])!r}")
    if m.get("steps"):
        parts.append(f"{m['steps']} steps in {m.get('seconds')} s")
    return " · ".join(parts)


def _print_event(event: Any, as_json: bool) -> None:
    """One log line: trainer events verbatim as JSON, worker messages after '#', stderr after '!'."""
    if as_json:
        emit_json(event)
    elif event.source == "train":
        typer.echo(json.dumps(event.data, ensure_ascii=False))
    elif event.source == "stderr":
        typer.echo(f"! {event.data.get('line', '')}")
    else:
        typer.echo(f"# {event.at:%Y-%m-%d %H:%M:%S} [attempt {event.attempt}] {event.data.get('message', '')}")


def _origin(job: Any) -> str:
    """Where a job starts from."""
    return f"version {job.parent_version}" if job.parent_version else "scratch"


def when(value: datetime | None) -> str:
    """A UTC timestamp, short."""
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value else "-"


def _num(value: Any) -> str:
    """A loss with four decimals, or '-'."""
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _percent(fraction: Any) -> str:
    """' (33%)' or ''."""
    return f" ({fraction:.0%})" if isinstance(fraction, int | float) else ""

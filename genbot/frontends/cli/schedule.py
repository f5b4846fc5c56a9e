"""``genbot schedule add | list | remove``: cron schedules that queue retrain jobs (``genbot serve`` runs them)."""

from __future__ import annotations

from typing import Annotated

import typer

from genbot.frontends.cli.common import emit_json, friendly_errors, with_service
from genbot.frontends.cli.jobs import (
    Batch,
    Bf16,
    Block,
    CarryState,
    Cell,
    Device,
    Dropout,
    Emb,
    Epochs,
    EvalEvery,
    GradClip,
    Hidden,
    Layers,
    Lr,
    MaxAttempts,
    Nproc,
    SaveDtype,
    Seconds,
    Seed,
    Source,
    Steps,
    Warmup,
    WeightDecay,
    retrain_request,
    when,
)  # fmt: skip

app = typer.Typer()
schedule_app = typer.Typer(help="Cron schedules that queue retrain jobs.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("add")
@friendly_errors
def schedule_add(
    model: Annotated[str, typer.Argument(help="the model to retrain")],
    corpus: Annotated[str, typer.Option(help="registered corpus name")],
    cron: Annotated[str, typer.Option(help="five-field cron expression in UTC, e.g. '0 3 * * *'")],
    source: Source = "active",
    steps: Steps = None, epochs: Epochs = None, seconds: Seconds = None,
    cell: Cell = None, layers: Layers = None, hidden: Hidden = None, emb: Emb = None,
    dropout: Dropout = None, block: Block = None, batch: Batch = None, lr: Lr = None, warmup: Warmup = None,
    weight_decay: WeightDecay = None, grad_clip: GradClip = None, carry_state: CarryState = None,
    bf16: Bf16 = None, device: Device = None, eval_every: EvalEvery = None, seed: Seed = None,
    save_dtype: SaveDtype = None, nproc: Nproc = None, max_attempts: MaxAttempts = None,
) -> None:  # fmt: skip
    """Queue a retrain of MODEL on CORPUS whenever CRON comes due (needs `genbot serve` running)."""
    request = retrain_request(model, corpus, source, locals())
    row = with_service(lambda service: service.jobs.add_schedule(request, cron), serving=False)
    typer.echo(
        f"schedule {row.id}: retrain {row.model} on {row.corpus} at '{row.cron}' (UTC); next {when(row.next_run_at)}"
    )


@schedule_app.command("list")
@friendly_errors
def schedule_list(as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Every schedule with its next run."""
    for row in with_service(lambda service: service.jobs.schedules(), serving=False):
        if as_json:
            emit_json(row)
            continue
        options = " ".join(f"{k}={v}" for k, v in row.job_args.items())
        typer.echo(f"#{row.id} {row.model} on {row.corpus} '{row.cron}' next {when(row.next_run_at)} "
                   f"last {when(row.last_run_at)} {options}")  # fmt: skip


@schedule_app.command("remove")
@friendly_errors
def schedule_remove(schedule_id: Annotated[int, typer.Argument(help="schedule id")]) -> None:
    """Delete a schedule (jobs it already queued stay)."""
    with_service(lambda service: service.jobs.remove_schedule(schedule_id), serving=False)
    typer.echo(f"schedule {schedule_id} removed")

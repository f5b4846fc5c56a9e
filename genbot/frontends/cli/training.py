"""``genbot train`` (a char-RNN, the default; ``genbot train captioner``) and ``genbot eval``, in the foreground.

``train`` is a group whose default command is ``charrnn``: ``genbot train --corpus … --out …``
runs ``genbot train charrnn --corpus … --out …``. The job worker's child command line ends in
``-- charrnn`` so that no stored path can become a subcommand or an option.

``--nproc N`` (and ``--nnodes`` / ``--rdzv-endpoint`` for several machines) runs the same command
under torchrun: this process checks the options, then starts torchrun, whose N processes each run
``genbot train`` with these options and train together (DistributedDataParallel).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption, _click  # typer ships its own copy of click

from genbot.errors import GenbotError, InvalidRequest, describe
from genbot.frontends.cli import captioner
from genbot.frontends.cli.common import emit_json, friendly_errors, print_report, resolve_model_dir, with_service
from genbot.frontends.cli.progress import TrainProgress
from genbot.training.launch import check_launch, is_main_rank, is_rank, torchrun_command
from genbot.versions.names import check_model_name


class DefaultsToCharRNN(TyperGroup):
    """A group that runs ``charrnn`` unless its first argument names another subcommand."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        """Put ``charrnn`` in front of arguments that do not start with a subcommand name."""
        if not args or args[0] not in self.commands:
            args = ["charrnn", *args]
        return super().parse_args(ctx, args)


# Options that only say how to launch torchrun; its ranks are not given them.
_LAUNCH_ONLY = frozenset({"nnodes", "rdzv_endpoint"})

app = typer.Typer()
train_app = typer.Typer(cls=DefaultsToCharRNN, help="Train a char-RNN (default) or a captioner.")
app.add_typer(train_app, name="train")


@train_app.command("charrnn")
@friendly_errors
def train(
    ctx: typer.Context,
    corpus: Annotated[Path, typer.Option(help="UTF-8 text file to train on (captioner: see genbot train captioner)")],
    out: Annotated[Path, typer.Option(help="output model folder (best checkpoint + resume state)")],
    kind: Annotated[str, typer.Argument(help="charrnn (the captioner: genbot train captioner)")] = "charrnn",
    from_model: Annotated[str, typer.Option("--from", help="fine-tune this model folder or plugin")] = "",
    cell: Annotated[str, typer.Option(help="rnn | lstm | gru")] = "lstm",
    layers: Annotated[int, typer.Option(help="recurrent layers")] = 2,
    hidden: Annotated[int, typer.Option(help="units per layer")] = 256,
    emb: Annotated[int, typer.Option(help="embedding size")] = 64,
    dropout: Annotated[float, typer.Option(help="dropout between layers and before the head")] = 0.0,
    block: Annotated[int, typer.Option(help="truncated-BPTT window in chars")] = 100,
    batch: Annotated[int, typer.Option(help="windows per step")] = 64,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 3e-3,
    warmup: Annotated[int, typer.Option(help="linear warmup steps")] = 0,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 0.01,
    grad_clip: Annotated[float, typer.Option(help="max gradient norm")] = 5.0,
    carry_state: Annotated[bool, typer.Option(help="carry hidden state across windows")] = False,
    bf16: Annotated[bool, typer.Option(help="bfloat16 autocast")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads (0: default)")] = 0,
    steps: Annotated[int | None, typer.Option(help="budget: optimizer steps")] = None,
    epochs: Annotated[float | None, typer.Option(help="budget: passes over the train split")] = None,
    seconds: Annotated[float | None, typer.Option(help="budget: training seconds")] = None,
    eval_every: Annotated[int, typer.Option(help="steps between evaluations (0: auto)")] = 0,
    seed: Annotated[int, typer.Option(help="random seed")] = 1337,
    save_dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16 weights")] = "float32",
    name: Annotated[str, typer.Option(help="model name in the card")] = "",
    resume: Annotated[bool, typer.Option(help="continue from OUT/checkpoint if present")] = False,
    register: Annotated[
        str, typer.Option(help="then serve OUT as a new model of this name (genbot models add NAME OUT)")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="JSON-lines progress and summary")] = False,
    nproc: Annotated[int, typer.Option(help="training processes here (torchrun); --batch is per process")] = 1,
    nnodes: Annotated[int, typer.Option(help="machines training together (each runs this with --rdzv-endpoint)")] = 1,
    rdzv_endpoint: Annotated[str, typer.Option(help="HOST:PORT where the machines' processes meet")] = "",
) -> None:
    """Train a char-RNN on a corpus (or fine-tune one with --from); ``genbot train captioner`` trains a captioner."""
    if kind == "captioner":
        raise InvalidRequest("the captioner has its own options: genbot train captioner --corpus … --out …")
    if kind != "charrnn":
        raise InvalidRequest(f"unknown model kind {kind!r} (choose charrnn or captioner)")
    from genbot.training.trainer import TrainConfig
    from genbot.training.trainer import train as run_training

    parent = str(resolve_model_dir(from_model)) if from_model else ""
    cfg = TrainConfig(
        cell=cell, layers=layers, hidden=hidden, embedding=emb, dropout=dropout, block=block, batch=batch,
        lr=lr, warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip, carry_state=carry_state,
        bf16=bf16, device=device, threads=threads, steps=steps, epochs=epochs, seconds=seconds,
        eval_every=eval_every, seed=seed, save_dtype=save_dtype, name=name, parent=parent, nproc=nproc,
    )  # fmt: skip
    if device == "cuda":
        _require_cuda()
    if register:
        check_model_name(register)  # before the training, not after it
    if is_rank():
        return _train_as_rank(cfg, corpus, out, resume, register, as_json)
    if nproc > 1 or nnodes > 1:
        check_launch(nproc, nnodes, rdzv_endpoint)
        cfg.validate()  # bad options are refused here, once, rather than by every rank
        raise typer.Exit(_launch(ctx, nproc, nnodes, rdzv_endpoint))
    if as_json:
        result = run_training(cfg, corpus, out, sink=emit_json, resume=resume)
    else:
        with TrainProgress() as progress:
            result = run_training(cfg, corpus, out, sink=progress.on_event, resume=resume)
        progress.summary(asdict(result))
    if register:
        _register(register, out, as_json)


def _train_as_rank(cfg: Any, corpus: Path, out: Path, resume: bool, register: str, as_json: bool) -> None:
    """Train as one of torchrun's ranks: rank 0 alone prints progress, the summary and registers."""
    from genbot.training.trainer import train as run_training

    main = is_main_rank()
    try:
        if as_json:
            result = run_training(cfg, corpus, out, sink=emit_json, resume=resume)
        elif main:
            with TrainProgress() as progress:
                result = run_training(cfg, corpus, out, sink=progress.on_event, resume=resume)
            progress.summary(asdict(result))
        else:
            result = run_training(cfg, corpus, out, resume=resume)
    except GenbotError as e:
        # torchrun reports any failed rank as its own exit status 1; this line keeps the reason's
        # status (2: bad input) for whoever reads the JSON lines (the job worker does).
        if as_json and main:
            emit_json({"event": "error", "error": str(e), "exit_code": describe(e).exit_code})
        raise
    if register and main:
        _register(register, Path(result.out), as_json)


def _launch(ctx: typer.Context, nproc: int, nnodes: int, rdzv_endpoint: str) -> int:
    """Run this very command under torchrun and wait for it; returns torchrun's exit status."""
    ranks = [sys.executable, "-m", "genbot", "train", *_rank_arguments(ctx)]
    command = torchrun_command(ranks, nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint)
    launcher = subprocess.Popen(command)
    try:
        return launcher.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached torchrun too (same terminal); it stops its ranks, then exits.
        launcher.wait()
        raise


def _rank_arguments(ctx: typer.Context) -> list[str]:
    """The options this command was given, as ``--name=value`` words for each rank's command line."""
    words = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if not isinstance(param, TyperOption) or param.name in _LAUNCH_ONLY or value is None:
            continue
        if param.is_flag and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            words += [param.opts[0]] if value else []
        else:
            words.append(f"{param.opts[0]}={value}")
    # Nothing after "--" is an option, so a value can never turn into one.
    return [*words, "--", str(ctx.params.get("kind", "charrnn"))]


def _register(name: str, folder: Path, as_json: bool) -> None:
    """Add the folder training wrote as model ``name`` (what ``genbot models add`` does)."""
    row = with_service(lambda service: service.versions.add_model(name, folder), serving=False)
    if as_json:
        emit_json({"event": "registered", "model": row.model, "version": row.version, "path": row.path})
    else:
        typer.echo(f"registered model {row.model}: version {row.version} is active")


@train_app.command("captioner")
@friendly_errors
def train_captioner(
    corpus: Annotated[Path, typer.Option(help="captions folder, registered captions corpus, or synthetic")],
    out: Annotated[Path, typer.Option(help="output model folder (the best model by BLEU-4)")],
    steps: Annotated[int | None, typer.Option(help="budget: optimizer steps")] = None,
    seconds: Annotated[float | None, typer.Option(help="budget: training seconds")] = None,
    batch: Annotated[int, typer.Option(help="images per step")] = 64,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 3e-3,
    threads: Annotated[int, typer.Option(help="torch threads (0: default)")] = 0,
    seed: Annotated[int, typer.Option(help="random seed")] = 1337,
    name: Annotated[str, typer.Option(help="model name in the card (default: captioner)")] = "",
    eval_every: Annotated[int, typer.Option(help="steps between evaluations (0: 500)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="JSON-lines progress and summary")] = False,
) -> None:
    """Train an image captioner (CNN encoder + RNN decoder) on a captions corpus or synthetic scenes."""
    captioner.train(str(corpus), out, steps, seconds, batch, lr, threads, seed, name, eval_every, as_json)


def _require_cuda() -> None:
    from genbot.runtime import cuda_available

    if not cuda_available():
        raise InvalidRequest("--device cuda was asked for but no CUDA device is available")


@app.command("eval")
@friendly_errors
def eval_cmd(
    model: Annotated[str, typer.Argument(help="model folder or bundled plugin name")],
    corpus: Annotated[Path, typer.Option(help="text whose last 10% is the val split")],
    iters: Annotated[int, typer.Option(help="batches of 64 random 256-char blocks")] = 50,
    threads: Annotated[int, typer.Option(help="torch threads (0: default)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Validation loss of a model on a corpus's val split, in nats and bits per char."""
    from genbot.networks.checkpoint import load_model
    from genbot.runtime import set_torch_threads
    from genbot.training.data import read_corpus
    from genbot.training.evaluate import evaluate_text

    folder = resolve_model_dir(model)
    if _is_captioner(folder):
        return captioner.evaluate(folder, str(corpus), threads, as_json)
    set_torch_threads(threads)
    loaded = load_model(folder)
    report: dict[str, Any] = evaluate_text(loaded.network, loaded.vocab, read_corpus(corpus), iters)
    report["model"] = loaded.card.name
    print_report(report, as_json)


def _is_captioner(folder: Path) -> bool:
    """Whether a model folder's card says it is a captioner."""
    from genbot.networks.card import ModelCard
    from genbot.networks.checkpoint import CARD_FILE

    return ModelCard.read(folder / CARD_FILE).kind == "captioner"

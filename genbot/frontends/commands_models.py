"""CLI commands that train, evaluate and sample models in the foreground."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from genbot.errors import CheckpointError, InvalidRequest
from genbot.frontends.cli import app, emit_json, friendly_errors
from genbot.frontends.progress import TrainProgress


def resolve_model_dir(model: str) -> Path:
    """A model folder path, or the folder of a bundled plugin with that name."""
    path = Path(model)
    if path.is_dir():
        return path
    from genbot.config import load_settings

    candidate = load_settings().plugins_dir / model
    if "/" not in model and candidate.is_dir():
        return candidate
    raise CheckpointError(f"{model!r} is neither a model folder nor a bundled plugin name")


@app.command()
@friendly_errors
def train(
    corpus: Annotated[Path, typer.Option(help="UTF-8 text file to train on (captioner: see genbot train captioner)")],
    out: Annotated[Path, typer.Option(help="output model folder (best checkpoint + resume state)")],
    kind: Annotated[
        str, typer.Argument(help="charrnn, or captioner (CORPUS: captions folder or name, or synthetic)")
    ] = "charrnn",
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
    as_json: Annotated[bool, typer.Option("--json", help="JSON-lines progress and summary")] = False,
) -> None:
    """Train a char-RNN on a corpus (or fine-tune one with --from); ``genbot train captioner`` trains a captioner."""
    if kind == "captioner":
        from genbot.frontends.commands_caption import train_captioner_command

        # The captioner keeps its own architecture defaults; the shared options it reads are these.
        return train_captioner_command(
            str(corpus), out, steps, seconds, batch, lr, threads, seed, name, eval_every, as_json
        )
    if kind != "charrnn":
        raise InvalidRequest(f"unknown model kind {kind!r} (choose charrnn or captioner)")
    from genbot.training.trainer import TrainConfig
    from genbot.training.trainer import train as run_training

    parent = str(resolve_model_dir(from_model)) if from_model else ""
    cfg = TrainConfig(
        cell=cell, layers=layers, hidden=hidden, embedding=emb, dropout=dropout, block=block, batch=batch,
        lr=lr, warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip, carry_state=carry_state,
        bf16=bf16, device=device, threads=threads, steps=steps, epochs=epochs, seconds=seconds,
        eval_every=eval_every, seed=seed, save_dtype=save_dtype, name=name, parent=parent,
    )  # fmt: skip
    if device == "cuda":
        _require_cuda()
    if as_json:
        result = run_training(cfg, corpus, out, sink=emit_json, resume=resume)
        return
    with TrainProgress() as progress:
        result = run_training(cfg, corpus, out, sink=progress.on_event, resume=resume)
    progress.summary(asdict(result))


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
    from genbot.models.checkpoint import load_model
    from genbot.runtime import set_torch_threads
    from genbot.training.data import read_corpus
    from genbot.training.evaluate import evaluate_text

    folder = resolve_model_dir(model)
    if _is_captioner(folder):
        from genbot.frontends.commands_caption import eval_captioner_command

        return eval_captioner_command(folder, str(corpus), threads, as_json)
    set_torch_threads(threads)
    loaded = load_model(folder)
    report: dict[str, Any] = evaluate_text(loaded.model, loaded.vocab, read_corpus(corpus), iters)
    report["model"] = loaded.card.name
    if as_json:
        emit_json(report)
        return
    for key, value in report.items():
        typer.echo(f"{key:>18}: {value}")


def _is_captioner(folder: Path) -> bool:
    """Whether a model folder's card says it is a captioner."""
    from genbot.models.card import ModelCard
    from genbot.models.checkpoint import CARD_FILE

    return ModelCard.read(folder / CARD_FILE).kind == "captioner"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

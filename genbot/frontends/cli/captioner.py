"""The captioner's side of ``genbot train captioner`` and ``genbot eval CAPTIONER``: data sources, progress.

``--corpus`` names a COCO-format captions folder, a corpus registered with
``genbot corpus add NAME DIR --kind captions``, or ``synthetic`` (rendered scenes, see
``genbot.training.scenes``; ``synthetic:N`` evaluates on N held-out scenes, 500 by default). Training evaluates 200
held-out images every ``--eval-every`` steps (500 by default) and keeps the best model by
BLEU-4; words seen fewer than twice in a real corpus's captions become ``<UNK>`` (every synthetic word is kept).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from genbot.errors import CorpusError, InvalidRequest
from genbot.frontends.cli.common import emit_json, print_report

SYNTHETIC = "synthetic"
DEFAULT_EVAL_SCENES = 500
COCO_MIN_COUNT = 2  # words seen once in a real-photo corpus's captions become <UNK>


def caption_source(corpus: str, image_size: int) -> Any:
    """The training/eval data ``--corpus`` names (see the module docstring)."""
    from genbot.training.caption_data import CAPTIONS_FILE, CocoCaptions, SyntheticScenes

    if corpus == SYNTHETIC or corpus.startswith(SYNTHETIC + ":"):
        return SyntheticScenes(image_size)
    folder = Path(corpus)
    if not (folder / CAPTIONS_FILE).is_file():
        from genbot.config import load_settings
        from genbot.corpora.files import corpus_folder

        folder = corpus_folder(load_settings(), corpus)
    if not (folder / CAPTIONS_FILE).is_file():
        raise CorpusError(f"{corpus!r} is not a captions folder, a registered captions corpus or 'synthetic'")
    return CocoCaptions(folder, image_size)


def eval_size(corpus: str, default: int) -> int:
    """Held-out images to evaluate: N of ``synthetic:N``, else ``default``."""
    _, _, n = corpus.partition(":")
    if not n:
        return default
    if not n.isdigit() or int(n) < 1:
        raise InvalidRequest(f"{corpus!r}: write synthetic:N with N a positive number of scenes")
    return int(n)


def train(
    corpus: str, out: Path, steps: int | None, seconds: float | None, batch: int, lr: float, threads: int,
    seed: int, name: str, eval_every: int, as_json: bool,
) -> None:  # fmt: skip
    """``genbot train captioner``: train on ``corpus`` and keep the best model in ``out``."""
    from genbot.runtime import set_torch_threads
    from genbot.training.captioner_trainer import CaptionTrainConfig, train_captioner

    set_torch_threads(threads)
    synthetic = corpus == SYNTHETIC
    cfg = CaptionTrainConfig(
        steps=steps, seconds=seconds, batch=batch, lr=lr, seed=seed, name=name or "captioner",
        min_count=1 if synthetic else COCO_MIN_COUNT, eval_every=eval_every or 500, eval_images=200,
        command=shlex.join(["genbot", *sys.argv[1:]]),
    )  # fmt: skip
    source = caption_source(corpus, cfg.image_size)
    result = train_captioner(cfg, source, out, sink=emit_json if as_json else _print_event)
    if not as_json:
        typer.echo(f"saved {result.out}: {result.steps} steps in {result.seconds:.0f} s, {_metrics(result.metrics)}")


def _print_event(event: dict[str, Any]) -> None:
    """One human-readable progress line."""
    kind = event.get("event")
    if kind == "step":
        typer.echo(f"step {event['step']:>6}  loss {event['loss']:.3f}  {event['seconds']:.0f} s")
    elif kind == "eval":
        metrics = {k: v for k, v in event.items() if k.startswith(("bleu", "object"))}
        typer.echo(f"eval at step {event['step']}: {_metrics(metrics)}  e.g. {event['sample']!r}")
    elif kind == "start":
        typer.echo(f"captioner: {event['params']:,} parameters, {event['vocab']} words")


def _metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def evaluate(folder: Path, corpus: str, threads: int, as_json: bool) -> None:
    """``genbot eval CAPTIONER --corpus NAME``: BLEU-1..4 on the held-out split."""
    from genbot.networks.captioner_checkpoint import load_captioner
    from genbot.runtime import set_torch_threads
    from genbot.training.captioner_trainer import evaluate as evaluate_captioner

    set_torch_threads(threads)
    loaded = load_captioner(folder)
    source = caption_source(corpus, loaded.captioner.config.image_size)
    metrics, _ = evaluate_captioner(loaded, source.held_out(eval_size(corpus, DEFAULT_EVAL_SCENES)))
    report: dict[str, Any] = {"model": loaded.card.name, "corpus": corpus, **metrics}
    print_report(report, as_json)

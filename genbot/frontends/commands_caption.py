"""CLI commands for the image captioner: ``genbot caption``, and the captioner branches of train and eval.

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
from typing import Annotated, Any

import typer

from genbot.errors import CorpusError, InvalidRequest
from genbot.frontends.cli import app, emit_json, friendly_errors
from genbot.frontends.commands_corpus import corpus_app, run_admin

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
        from genbot.training.corpora import corpus_folder

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


def train_captioner_command(
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


def eval_captioner_command(folder: Path, corpus: str, threads: int, as_json: bool) -> None:
    """``genbot eval CAPTIONER --corpus NAME``: BLEU-1..4 on the held-out split."""
    from genbot.models.captioner_checkpoint import load_captioner
    from genbot.runtime import set_torch_threads
    from genbot.training.captioner_trainer import evaluate

    set_torch_threads(threads)
    loaded = load_captioner(folder)
    source = caption_source(corpus, loaded.captioner.config.image_size)
    metrics, _ = evaluate(loaded, source.held_out(eval_size(corpus, DEFAULT_EVAL_SCENES)))
    report: dict[str, Any] = {"model": loaded.card.name, "corpus": corpus, **metrics}
    if as_json:
        emit_json(report)
        return
    for key, value in report.items():
        typer.echo(f"{key:>18}: {value}")


@corpus_app.command("synth-scenes")
@friendly_errors
def corpus_synth_scenes(
    name: Annotated[str, typer.Argument(help="corpus name: lower-case letters, digits, '-' and '_'")],
    count: Annotated[int, typer.Option(help="scenes to render")] = 1000,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    seed: Annotated[int, typer.Option(help="first scene seed (scene i uses seed + i)")] = 0,
) -> None:
    """Render synthetic scenes as a COCO-format folder and register it as a captions corpus."""
    import tempfile

    from genbot.training.scenes import write_coco_folder

    if not 2 <= count <= 200_000 or not 8 <= size <= 512:
        raise InvalidRequest("--count must be 2..200000 and --size 8..512")
    with tempfile.TemporaryDirectory(prefix="genbot-scenes-") as tmp:
        folder = write_coco_folder(Path(tmp) / name, count, size, seed)

        async def body(service: Any) -> Any:
            return await service.add_corpus(
                name, [folder], kind="captions", licence="generated", description="synthetic scenes"
            )

        row = run_admin(body)
    typer.echo(
        f"added corpus {row.name} (captions): {count:,} scenes of {size}x{size}, sha256 {row.sha256[:12]}… → {row.path}"
    )


@app.command()
@friendly_errors
def caption(
    image: Annotated[Path, typer.Argument(help="image file (JPEG, PNG, GIF, WebP, BMP, …)")],
    model: Annotated[str, typer.Option(help="captioner to use")] = "captioner",
    beam: Annotated[int, typer.Option(help="beam width (ignored with --temperature)")] = 3,
    temperature: Annotated[float | None, typer.Option(help="sample at this temperature instead of beam search")] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed (same seed, same captions)")] = None,
    count: Annotated[int, typer.Option(help="captions to sample with --temperature")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Describe an image in words (stored in the history like a generation)."""
    from genbot.frontends.commands_serving import run_with_service

    try:
        data = image.read_bytes()
    except OSError as e:
        raise InvalidRequest(f"{image}: cannot read the file ({e.strerror or e})") from e

    async def body(service: Any) -> Any:
        return await service.caption(
            model, data, beam=beam, temperature=temperature, seed=seed, count=count, frontend="cli", user_id="local"
        )

    result = run_with_service(body)
    if as_json:
        emit_json(result.to_dict())
        return
    for c in result.captions:
        typer.echo(f"{c.logprob:8.3f}  {c.text}")

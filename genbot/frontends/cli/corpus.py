"""``genbot corpus add | list | show | remove | synth-scenes``: corpora for fine-tuning.

These commands open the service without loading any model (``serving=False``): they only read and
write the database and the data folder, and they leave other processes' running generations alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genbot.errors import InvalidRequest
from genbot.frontends.cli.common import emit_json, friendly_errors, json_ready, with_service

app = typer.Typer()
corpus_app = typer.Typer(help="Corpora for fine-tuning: add, list, show, remove.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("add")
@friendly_errors
def corpus_add(
    name: Annotated[str, typer.Argument(help="corpus name: lower-case letters, digits, '-' and '_'")],
    paths: Annotated[list[Path], typer.Argument(help="text files (concatenated in order), or one captions folder")],
    kind: Annotated[str, typer.Option(help="text | captions")] = "text",
    licence: Annotated[str, typer.Option(help="licence of the text")] = "",
    description: Annotated[str, typer.Option(help="what the corpus is")] = "",
) -> None:
    """Validate a corpus, copy it into the data folder and record it."""
    row = with_service(
        lambda service: service.corpora.add(name, paths, kind=kind, licence=licence, description=description),
        serving=False,
    )
    typer.echo(
        f"added corpus {row.name} ({row.kind}): {row.size_bytes:,} bytes, {row.chars:,} chars, "
        f"{len(row.charset)} distinct characters, sha256 {row.sha256[:12]}… → {row.path}"
    )


@corpus_app.command("list")
@friendly_errors
def corpus_list(as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Every registered corpus."""
    for row in with_service(lambda service: service.corpora.list(), serving=False):
        if as_json:
            emit_json(row)
        else:
            typer.echo(
                f"{row.name:<20} {row.kind:<8} {row.size_bytes:>12,} B {row.chars:>12,} chars "
                f"{len(row.charset):>4} distinct  {row.sha256[:12]}  {row.description}"
            )


@corpus_app.command("show")
@friendly_errors
def corpus_show(
    name: Annotated[str, typer.Argument(help="corpus name")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Everything recorded about one corpus."""
    data = json_ready(with_service(lambda service: service.corpora.get(name), serving=False))
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key + ':':<13} {value if key != 'charset' else repr(value)}")


@corpus_app.command("remove")
@friendly_errors
def corpus_remove(name: Annotated[str, typer.Argument(help="corpus name")]) -> None:
    """Delete a corpus's record and its copied files."""
    row = with_service(lambda service: service.corpora.remove(name), serving=False)
    typer.echo(f"removed corpus {row.name} and its files")


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
            return await service.corpora.add(
                name, [folder], kind="captions", licence="generated", description="synthetic scenes"
            )

        row = with_service(body, serving=False)
    typer.echo(
        f"added corpus {row.name} (captions): {count:,} scenes of {size}x{size}, sha256 {row.sha256[:12]}… → {row.path}"
    )

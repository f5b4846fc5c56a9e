"""``genbot inspect``: look inside a model — a unit's activations, feature discovery, surprise, gates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genbot.errors import InvalidRequest
from genbot.frontends.cli.common import emit_json, friendly_errors, resolve_model_dir

if TYPE_CHECKING:
    from genbot.analysis.report import InspectReport

app = typer.Typer()
FEATURE_HELP = "quotes | line-position | bracket-depth | comment | math | env-depth"


@app.command()
@friendly_errors
def inspect(
    model: Annotated[str, typer.Argument(help="model folder or bundled plugin name")],
    text_file: Annotated[Path | None, typer.Option("--text", help="UTF-8 file to read (≤ 20,000 chars)")] = None,
    prompt: Annotated[str | None, typer.Option(help="text to read, given inline")] = None,
    layer: Annotated[int | None, typer.Option(help="layer, from 0 (default: top layer or the found unit's)")] = None,
    unit: Annotated[int | None, typer.Option(help="unit, from 0 (default: --find's best, else most variable)")] = None,
    kind: Annotated[str, typer.Option(help="h | c | a gate (i f g o / r z n) | gates")] = "h",
    find: Annotated[str | None, typer.Option(help=f"feature to search units for: {FEATURE_HELP}")] = None,
    surprise: Annotated[bool, typer.Option(help="also colour the text by -log p per char")] = False,
    gates: Annotated[bool, typer.Option(help="also plot gate saturation per layer")] = False,
    top: Annotated[int, typer.Option(help="units to list for --find")] = 5,
    out: Annotated[Path | None, typer.Option(help="folder for the PNG/HTML files")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Render a model's unit activations over a text (PNG + HTML); --find searches for a feature's unit."""
    from genbot.analysis.report import InspectRequest, inspect_folder
    from genbot.runtime import set_torch_threads

    set_torch_threads(1)
    req = InspectRequest(read_text(text_file, prompt), layer, unit, kind, find, surprise, gates, top)
    report = inspect_folder(resolve_model_dir(model), req)
    folder = out or default_out_dir(report.model)
    paths = write_files(folder, report.files)
    if as_json:
        emit_json(report.to_dict() | {"files": [str(p) for p in paths]})
        return
    print_report(report, paths)


def read_text(text_file: Path | None, prompt: str | None) -> str:
    """The text from exactly one of --text FILE and --prompt TEXT."""
    if (text_file is None) == (prompt is None):
        raise InvalidRequest("give exactly one of --text FILE and --prompt TEXT")
    if prompt is not None:
        return prompt.replace("\\n", "\n")
    assert text_file is not None
    try:
        return text_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequest(f"{text_file}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise InvalidRequest(f"{text_file}: not a UTF-8 text file ({e.__class__.__name__})") from None


def default_out_dir(model: str) -> Path:
    """``data_dir/inspect/<model>-<UTC timestamp>``."""
    from genbot.config import load_settings

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return load_settings().data_dir / "inspect" / f"{model}-{stamp}"


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write each rendered file into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def print_report(report: InspectReport, paths: list[Path]) -> None:
    """Human-readable lines: summary, top units with the chance baseline, the chosen unit, files."""
    for line in report.lines():
        typer.echo(line)
    for path in paths:
        typer.echo(f"wrote {path}")

"""Admin CLI for corpora (``genbot corpus …``) and model versions (``genbot models versions|activate|rollback``).

These commands open the service without loading any model (``serving=False``): they only read and
write the database and the data folder, and they leave other processes' running generations alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from genbot.errors import NotFound
from genbot.frontends.cli import app, emit_json, friendly_errors
from genbot.frontends.commands_serving import models_app

T = TypeVar("T")
corpus_app = typer.Typer(help="Corpora for fine-tuning: add, list, show, remove.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


def run_admin(body: Callable[[Any], Awaitable[T]]) -> T:
    """Open the service without models, run ``body(service)``, close it."""
    from genbot.config import load_settings
    from genbot.service import GenbotService

    settings = load_settings()

    async def main() -> T:
        async with GenbotService(settings, serving=False) as service:
            return await body(service)

    return asyncio.run(main())


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

    async def body(service: Any) -> Any:
        return await service.add_corpus(name, paths, kind=kind, licence=licence, description=description)

    row = run_admin(body)
    typer.echo(
        f"added corpus {row.name} ({row.kind}): {row.size_bytes:,} bytes, {row.chars:,} chars, "
        f"{len(row.charset)} distinct characters, sha256 {row.sha256[:12]}… → {row.path}"
    )


@corpus_app.command("list")
@friendly_errors
def corpus_list(as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Every registered corpus."""

    async def body(service: Any) -> list[Any]:
        rows: list[Any] = await service.corpora()
        return rows

    for row in run_admin(body):
        if as_json:
            emit_json(_corpus_dict(row))
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

    async def body(service: Any) -> Any:
        return await service.corpus(name)

    data = _corpus_dict(run_admin(body))
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key + ':':<13} {value if key != 'charset' else repr(value)}")


@corpus_app.command("remove")
@friendly_errors
def corpus_remove(name: Annotated[str, typer.Argument(help="corpus name")]) -> None:
    """Delete a corpus's record and its copied files."""

    async def body(service: Any) -> Any:
        return await service.remove_corpus(name)

    row = run_admin(body)
    typer.echo(f"removed corpus {row.name} and its files")


def _corpus_dict(row: Any) -> dict[str, Any]:
    """A corpus row as plain JSON-ready data."""
    data = asdict(row)
    data["kind"] = str(row.kind)
    data["created_at"] = row.created_at.isoformat()
    return data


# ----- model versions ------------------------------------------------------------------------------


@models_app.command("versions")
@friendly_errors
def models_versions(
    model: Annotated[str, typer.Argument(help="model name")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Every recorded version of a model; * marks the active one."""

    async def body(service: Any) -> list[Any]:
        rows: list[Any] = await service.versions(model)
        return rows

    rows = run_admin(body)
    if not rows:
        raise NotFound(f"no versions recorded for model {model!r}")
    for row in rows:
        if as_json:
            emit_json(_version_dict(row))
        else:
            typer.echo(_version_line(row))


@models_app.command("activate")
@friendly_errors
def models_activate(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version number")],
) -> None:
    """Make a version the active one; running servers switch to it without a restart."""

    async def body(service: Any) -> Any:
        return await service.activate(model, version)

    row = run_admin(body)
    typer.echo(f"{row.model}: version {row.version} is active")


@models_app.command("rollback")
@friendly_errors
def models_rollback(model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Go back to the version the active one replaced (its parent, else the one before)."""

    async def body(service: Any) -> Any:
        return await service.rollback(model)

    row = run_admin(body)
    typer.echo(f"{row.model}: rolled back to version {row.version}")


def _version_line(row: Any) -> str:
    """One human-readable line per version."""
    mark = "*" if row.active else " "
    val = "-" if row.val_loss is None else f"{row.val_loss:.4f}"
    parent = f"v{row.parent_version}" if row.parent_version is not None else "-"
    job = f"#{row.job_id}" if row.job_id is not None else "-"
    return (
        f"{mark} v{row.version:<4} val {val:<8} parent {parent:<5} corpus {row.corpus or '-':<16} job {job:<6} "
        f"{row.created_at:%Y-%m-%d %H:%M}  {row.path}"
    )


def _version_dict(row: Any) -> dict[str, Any]:
    """A version row as plain JSON-ready data."""
    data = asdict(row)
    data["created_at"] = row.created_at.isoformat()
    return data

"""``genbot history`` (list, search, export, import, prune) and ``genbot forget``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from genbot.errors import InvalidRequest
from genbot.frontends.cli.common import friendly_errors, with_service
from genbot.history import formats
from genbot.history.formats import FORMATS
from genbot.history.transfer import MAX_IMPORT_BYTES

app = typer.Typer()
history_app = typer.Typer(
    help="Stored generations: list, search (-q), export (--format), import, prune.", no_args_is_help=False
)
app.add_typer(history_app, name="history")
LIST_ROWS = 20  # rows shown when listing without --format or --limit


@history_app.callback(invoke_without_command=True)
@friendly_errors
def history(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="only this generator")] = None,
    user: Annotated[str | None, typer.Option(help="only this user id")] = None,
    search: Annotated[str | None, typer.Option(help="text in the prompt or output (a substring)")] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            "-q",
            help="full-text search, best match first (the newest 2,000 matches ranked, older ones after):"
            ' ROMEO love, love OR hate, -hate, "good night"',
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date or time, exclusive")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help=f"rows at most (default: {LIST_ROWS}, or all with --format)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (as --format jsonl)")] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help=f"export as {' | '.join(FORMATS)} (jsonl is what import reads)")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")] = None,
    thread: Annotated[int | None, typer.Option(help="the chain of continuations through this id, oldest first")] = None,
) -> None:
    """Stored generations, newest first (best match first with -q); --format exports them."""
    if ctx.invoked_subcommand is not None:
        return
    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    if as_json and fmt is None:
        fmt, limit = "jsonl", limit or LIST_ROWS
    filters: dict[str, Any] = {"model": model, "user_id": user, "search": search, "query": query}
    filters |= {"since": _when(since), "until": _when(until)}
    if fmt is None:
        shown = with_service(lambda service: _collect(service, filters, limit or LIST_ROWS, thread), serving=False)
        for row in shown:
            text = row.output.replace("\n", "⏎")
            link = f" ← #{row.parent_id}" if row.parent_id is not None else ""
            # A continuation's prompt is its parent's tail: its end is the part worth showing.
            prompt = row.prompt[:30] if row.parent_id is None else "…" + row.prompt[-29:]
            typer.echo(
                f"#{row.id}{link} {row.created_at:%Y-%m-%d %H:%M} {row.model} {row.status} "
                f"{row.frontend}/{row.user_id} "
                f"{prompt!r} → {text[:60]!r}"
            )
        return
    with _destination(output) as out:
        with_service(lambda service: _export(service, filters, limit, thread, fmt, out), serving=False)
    if output is not None:
        typer.echo(f"wrote {output}", err=True)


async def _collect(service: Any, filters: dict[str, Any], limit: int, thread: int | None) -> list[Any]:
    return [row async for row in _rows(service, filters, limit, thread)]


async def _rows(service: Any, filters: dict[str, Any], limit: int | None, thread: int | None) -> AsyncIterator[Any]:
    """The rows matching ``filters``; with ``thread``, that chain of continuations (oldest first) instead."""
    if thread is None:
        async for row in service.archive.rows(limit=limit, **filters):
            yield row
        return
    from genbot.service import Identity

    # The CLI runs with the database itself: the operator sees every row (like plain history).
    for row in list(await service.thread(thread, Identity("cli", admin=True)))[:limit]:
        yield row


async def _export(
    service: Any, filters: dict[str, Any], limit: int | None, thread: int | None, fmt: str, out: TextIO
) -> None:
    """Write rows as they are read, a page at a time, so a long history never sits in memory whole."""
    out.write(formats.head(fmt))
    index = 0
    async for row in _rows(service, filters, limit, thread):
        out.write(formats.piece(fmt, row, index))
        index += 1
    out.write(formats.tail(fmt))
    out.flush()


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[TextIO]:
    """stdout, or ``output`` written whole: into a sibling file renamed over it only once complete."""
    if output is None:
        yield sys.stdout
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@history_app.command("import")
@friendly_errors
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a JSON-lines export (--format jsonl)")],
    user: Annotated[str | None, typer.Option(help="the user id the rows will belong to (default: none, local)")] = None,
) -> None:
    """Import an export (JSON lines) as your generations; rows already stored are skipped."""
    size = file.stat().st_size
    if size > MAX_IMPORT_BYTES:  # refused before reading it
        raise InvalidRequest(f"{file} is {size:,} bytes; an import may be at most {MAX_IMPORT_BYTES:,}")
    data = file.read_bytes()
    report = with_service(lambda service: service.archive.import_export(data, user_id=user), serving=False)
    typer.echo(f"imported {report.imported} generation(s); skipped {report.duplicates} already stored")


@history_app.command("prune")
@friendly_errors
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be deleted")] = False,
    keep_days: Annotated[int | None, typer.Option(min=0, help="instead of [storage] keep_days")] = None,
    keep_rows: Annotated[int | None, typer.Option(min=0, help="instead of [storage] keep_rows")] = None,
) -> None:
    """Delete what retention does not keep: old generations (never running ones), job events, usage."""
    report = with_service(
        lambda service: service.archive.prune(keep_days=keep_days, keep_rows=keep_rows, dry_run=dry_run),
        serving=False,
    )
    if report is None:
        typer.echo("retention is off: set [storage] keep_days or keep_rows (or pass --keep-days / --keep-rows)")
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {report.generations} generation(s), {report.job_events} job event(s), "
        f"{report.usage_days} day(s) of usage"
    )


@app.command()
@friendly_errors
def forget(user: Annotated[str, typer.Argument(help="user id whose prompts and outputs are deleted")]) -> None:
    """Delete every stored prompt and output of one user."""
    typer.echo(f"deleted {with_service(lambda service: service.forget(user))} generation(s) of {user}")


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"not an ISO date or time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

"""``genbot history`` and ``genbot forget``: the stored generations, and deleting one user's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from genbot.errors import InvalidRequest
from genbot.frontends.cli.common import emit_json, friendly_errors, with_service

app = typer.Typer()


@app.command()
@friendly_errors
def history(
    model: Annotated[str | None, typer.Option(help="only this generator")] = None,
    user: Annotated[str | None, typer.Option(help="only this user id")] = None,
    search: Annotated[str | None, typer.Option(help="text in the prompt or output")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date or time, exclusive")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
    thread: Annotated[int | None, typer.Option(help="the chain of continuations through this id, oldest first")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Stored generations, newest first."""

    async def body(service: Any) -> list[Any]:
        if thread is not None:
            from genbot.service import Identity

            # The CLI runs with the database itself: the operator sees every row (like plain history).
            return list(await service.thread(thread, Identity("cli", admin=True)))
        rows: list[Any] = await service.history(
            model=model, user_id=user, search=search, since=_when(since), until=_when(until), limit=limit
        )
        return rows

    for row in with_service(body):
        if as_json:
            emit_json(row)
        else:
            text = row.output.replace("\n", "⏎")
            link = f" ← #{row.parent_id}" if row.parent_id is not None else ""
            # A continuation's prompt is its parent's tail: its end is the part worth showing.
            prompt = row.prompt[:30] if row.parent_id is None else "…" + row.prompt[-29:]
            typer.echo(
                f"#{row.id}{link} {row.created_at:%Y-%m-%d %H:%M} {row.model} {row.status} "
                f"{row.frontend}/{row.user_id} "
                f"{prompt!r} → {text[:60]!r}"
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

"""CLI commands that use the running service: repl, sample, history, forget, plugins, models, config, db."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from genbot.errors import InvalidRequest
from genbot.frontends.cli import app, emit_json, friendly_errors

T = TypeVar("T")
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def run_with_service(body: Callable[[Any], Awaitable[T]]) -> T:
    """Open the service from bot.toml + environment, run ``body(service)``, close it."""
    from genbot.config import load_settings
    from genbot.runtime import set_torch_threads
    from genbot.service import GenbotService

    settings = load_settings()
    set_torch_threads(settings.engine.torch_threads)

    async def main() -> T:
        async with GenbotService(settings) as service:
            return await body(service)

    return asyncio.run(main())


@app.command()
@friendly_errors
def repl(model: Annotated[str, typer.Option(help="generator to start with")] = "") -> None:
    """Chat with the generators in the terminal (every prompt and output is stored)."""
    from genbot.frontends.repl import Repl, piped_lines, terminal_lines

    async def body(service: Any) -> None:
        session = Repl(service)
        if model:
            session._use(model)
        if sys.stdin.isatty():
            history = service.settings.data_dir / "repl_history"
            lines = terminal_lines(history, lambda: f"{session.state.model}> ")
        else:
            lines = piped_lines()
        await session.run(lines)

    run_with_service(body)


@app.command()
@friendly_errors
def sample(
    model: Annotated[str, typer.Argument(help="bundled generator name or model folder")],
    prompt: Annotated[str, typer.Option(help="text to continue")] = "",
    temperature: Annotated[float | None, typer.Option(help="0 = argmax")] = None,
    length: Annotated[int | None, typer.Option(help="characters to generate")] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same text")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off")] = None,
    top_p: Annotated[float | None, typer.Option(help="1 = off")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object at the end")] = False,
) -> None:
    """Stream a sample from a model to stdout."""
    from genbot.service import GenerationRequest

    async def body(service: Any) -> None:
        name = model
        if Path(model).is_dir():
            name = service.add_model_folder(Path(model)).name
        req = GenerationRequest(
            model=name, prompt=prompt, temperature=temperature, length=length, seed=seed,
            top_k=top_k, top_p=top_p, stop=stop or [], frontend="cli", user_id="local",
        )  # fmt: skip
        gen = await service.generate(req)
        async for chunk in gen:
            if not as_json:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        result = await gen.result()
        if as_json:
            emit_json({"id": result.id, "model": gen.model, "output": result.output, "seed": gen.params.seed,
                       "status": result.status, "stats": result.stats.to_dict(), "dropped": gen.dropped,
                       "mapped": gen.mapped})  # fmt: skip
        else:
            sys.stdout.write("\n")

    run_with_service(body)


@app.command()
@friendly_errors
def history(
    model: Annotated[str | None, typer.Option(help="only this generator")] = None,
    user: Annotated[str | None, typer.Option(help="only this user id")] = None,
    search: Annotated[str | None, typer.Option(help="text in the prompt or output")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date or time, exclusive")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Stored generations, newest first."""

    async def body(service: Any) -> list[Any]:
        rows: list[Any] = await service.history(
            model=model, user_id=user, search=search, since=_when(since), until=_when(until), limit=limit
        )
        return rows

    for row in _history_rows(body):
        if as_json:
            emit_json(_row_dict(row))
        else:
            text = row.output.replace("\n", "⏎")
            typer.echo(
                f"#{row.id} {row.created_at:%Y-%m-%d %H:%M} {row.model} {row.status} {row.frontend}/{row.user_id} "
                f"{row.prompt[:30]!r} → {text[:60]!r}"
            )


def _history_rows(body: Callable[[Any], Awaitable[list[Any]]]) -> list[Any]:
    return run_with_service(body)


@app.command()
@friendly_errors
def forget(user: Annotated[str, typer.Argument(help="user id whose prompts and outputs are deleted")]) -> None:
    """Delete every stored prompt and output of one user."""

    async def body(service: Any) -> int:
        count: int = await service.forget(user)
        return count

    typer.echo(f"deleted {run_with_service(body)} generation(s) of {user}")


@app.command()
@friendly_errors
def plugins(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every plugin's generators: loaded, or failed with the reason."""
    for entry in _entries():
        if as_json:
            emit_json({"name": entry.name, "status": entry.status, "source": entry.source, "error": entry.error})
        else:
            state = "loaded" if entry.status == "loaded" else f"FAILED: {entry.error}"
            typer.echo(f"{entry.name:<14} {entry.source:<40} {state}")


models_app = typer.Typer(help="Loaded generators with their cards; their versions (versions, activate, rollback).")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
@friendly_errors
def models(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Loaded generators with their cards (subcommands: versions, activate, rollback)."""
    if ctx.invoked_subcommand is not None:
        return  # `genbot models versions …`: the subcommand does the work
    for entry in _entries():
        if entry.status != "loaded" or entry.card is None:
            continue
        card = entry.card
        if as_json:
            emit_json(card.model_dump(mode="json") | {"serving_paths": entry.serving_paths()})
            continue
        a = card.architecture
        typer.echo(
            f"{card.name:<14} v{card.version} {a.cell} {a.layers}x{a.hidden} vocab {a.vocab_size}  "
            f"val {card.metrics.get('val_block', '-')}  {card.description}"
        )


def _entries() -> list[Any]:
    from genbot.config import load_settings
    from genbot.engine.registry import build_registry

    return build_registry(load_settings()).list()


@app.command()
@friendly_errors
def config() -> None:
    """The effective configuration (bot.toml + environment), secrets masked."""
    from genbot.config import load_settings

    typer.echo(json.dumps(load_settings().masked_dump(), indent=2, default=str))


@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Apply pending migrations to the configured database."""
    from genbot.config import load_settings
    from genbot.service import upgrade_schema

    asyncio.run(upgrade_schema(load_settings()))
    typer.echo("database is at the latest migration")


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"not an ISO date or time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _row_dict(row: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(row)
    for key in ("created_at", "finished_at"):
        data[key] = data[key].isoformat() if data[key] else None
    data["status"] = str(row.status)
    return data

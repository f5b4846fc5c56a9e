"""``genbot api`` (the HTTP server) and ``genbot keys create|list|revoke`` (its API keys).

Keys are shown once, at creation; only their sha256 is stored. ``genbot api`` holds one
``async with GenbotService(...)`` around the uvicorn server and stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from genbot.frontends.cli import app, emit_json, friendly_errors
from genbot.frontends.commands_corpus import run_admin

keys_app = typer.Typer(help="HTTP API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command("api")
@friendly_errors
def api(
    host: Annotated[str | None, typer.Option(help="address to bind (default: [api] host)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: [api] port)")] = None,
) -> None:
    """Serve the HTTP API (native and OpenAI-compatible) until Ctrl-C or SIGTERM."""
    from genbot.config import load_settings
    from genbot.frontends.api.app import check_bind
    from genbot.frontends.commands_serve import setup_logging
    from genbot.runtime import set_torch_threads

    settings = load_settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    api_settings = settings.api.model_copy(update=overrides)
    check_bind(api_settings)  # before loading any model: a refused address fails fast
    set_torch_threads(settings.engine.torch_threads)
    setup_logging(settings.log_level)
    typer.echo(f"genbot API on http://{api_settings.host}:{api_settings.port} (Ctrl-C to stop)", err=True)
    run_fast(_serve_api(settings, api_settings))


def run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (uvicorn[standard]): its I/O costs the event
    loop, which shares the GIL with the model's stepping thread, much less CPU than asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def _serve_api(settings: Any, api_settings: Any) -> None:
    """One service around the server, stopped by a signal."""
    from genbot.frontends.api.app import serve
    from genbot.frontends.commands_serve import stop_on_signals
    from genbot.service import GenbotService

    stop = stop_on_signals()
    async with GenbotService(settings) as service:
        await serve(service, stop, api_settings)


@keys_app.command("create")
@friendly_errors
def keys_create(
    name: Annotated[str, typer.Argument(help="a unique name for the key (who or what uses it)")],
    admin: Annotated[bool, typer.Option("--admin", help="may manage corpora, jobs and models")] = False,
) -> None:
    """Create an API key and print it (the only time it is shown)."""

    async def body(service: Any) -> Any:
        return await service.create_key(name, admin=admin)

    row, key = run_admin(body)
    typer.echo(key)
    scope = "admin " if row.admin else ""
    typer.echo(f"created {scope}key {row.name!r}; store it now, it is not shown again", err=True)


@keys_app.command("list")
@friendly_errors
def keys_list(json_out: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Every key: name, prefix, scope, created, last used, revoked."""

    async def body(service: Any) -> Any:
        return await service.keys()

    for row in run_admin(body):
        if json_out:
            emit_json(_key_json(row))
            continue
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        typer.echo(f"{row.name:<20} {row.prefix}…  {'admin' if row.admin else 'user ':<5}  {state:<18} used {used}")


def _key_json(row: Any) -> dict[str, Any]:
    """A key as one JSON object (never the secret: it is not stored)."""
    return {
        "name": row.name,
        "prefix": row.prefix,
        "admin": row.admin,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@keys_app.command("revoke")
@friendly_errors
def keys_revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key: requests with it are refused from now on."""

    async def body(service: Any) -> Any:
        return await service.revoke_key(name)

    row = run_admin(body)
    typer.echo(f"revoked key {row.name!r} ({row.prefix}…)")

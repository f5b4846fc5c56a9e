"""``genbot serve`` and ``genbot api``: the long-running processes.

``serve`` runs the job worker and the scheduler beside the front ends; ``api`` serves the HTTP
API alone (it holds one ``async with GenbotService(...)`` around the uvicorn server).

One ``async with GenbotService(...)`` owns the database, models, engine and version watcher;
background loops run as tasks inside it until Ctrl-C or SIGTERM sets ``stop``, then finish
their current step (a running job's training child is stopped and the job handed back to the
queue, to resume from its checkpoint) before the service closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from genbot.frontends.cli.common import friendly_errors, run_until_stopped, setup_logging, stop_on_signals

app = typer.Typer()
log = logging.getLogger("genbot.serve")


@app.command()
@friendly_errors
def serve(
    worker: Annotated[bool, typer.Option(help="run an embedded job worker")] = True,
    scheduler: Annotated[bool, typer.Option(help="run the schedule loop")] = True,
    api: Annotated[bool, typer.Option(help="serve the HTTP API ([api] host and port)")] = False,
    discord: Annotated[bool, typer.Option(help="run the Discord bot when DISCORD_TOKEN is set")] = True,
) -> None:
    """Run genbot until Ctrl-C or SIGTERM: job worker, scheduler, the API (--api), the Discord bot (DISCORD_TOKEN)."""
    from genbot.config import load_settings
    from genbot.runtime import set_torch_threads

    settings = load_settings()
    if api:
        from genbot.frontends.api.app import check_bind

        check_bind(settings.api)  # refuse an open public address before loading any model
    set_torch_threads(settings.engine.torch_threads)
    setup_logging(settings.log_level)
    asyncio.run(_serve(settings, worker, scheduler, api, discord))


async def _serve(
    settings: Any, with_worker: bool, with_scheduler: bool, with_api: bool = False, with_discord: bool = True
) -> None:
    """Open the service and run its background loops until stopped."""
    from genbot.service import GenbotService

    stop = stop_on_signals()
    async with GenbotService(settings) as service:
        loops: dict[str, Coroutine[Any, Any, Any]] = {}
        if with_worker:
            loops["worker"] = service.jobs.worker().run(stop)
        if with_scheduler:
            loops["scheduler"] = service.jobs.scheduler().run(stop)
        if with_api:
            from genbot.frontends.api.app import serve as serve_api

            loops["api"] = serve_api(service, stop)
        if with_discord and settings.discord_token is not None:
            from genbot.frontends.discord import run_bot

            loops["discord"] = run_bot(service, stop)
        # Front ends join here: the Discord bot and the HTTP API (later issues) are more entries in
        # `loops`, each a coroutine that serves until `stop` is set and then returns.
        log.info("genbot serving: %s (Ctrl-C or SIGTERM to stop)", ", ".join(loops) or "nothing but the service")
        await run_until_stopped(loops, stop)


@app.command("api")
@friendly_errors
def api(
    host: Annotated[str | None, typer.Option(help="address to bind (default: [api] host)")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: [api] port)")] = None,
) -> None:
    """Serve the HTTP API (native and OpenAI-compatible) until Ctrl-C or SIGTERM."""
    from genbot.config import load_settings
    from genbot.frontends.api.app import check_bind
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
    from genbot.service import GenbotService

    stop = stop_on_signals()
    async with GenbotService(settings) as service:
        await serve(service, stop, api_settings)

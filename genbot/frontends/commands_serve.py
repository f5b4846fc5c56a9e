"""``genbot serve``: the long-running process, with the job worker and the scheduler beside the front ends.

One ``async with GenbotService(...)`` owns the database, models, engine and version watcher;
background loops run as tasks inside it until Ctrl-C or SIGTERM sets ``stop``, then finish
their current step (a running job's training child is stopped and the job handed back to the
queue, to resume from its checkpoint) before the service closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from genbot.frontends.cli import app, friendly_errors

log = logging.getLogger("genbot.serve")
STOP_GRACE_S = 30.0  # how long background loops get to wind down after Ctrl-C / SIGTERM


def setup_logging(level: str) -> None:
    """Log genbot's messages at ``level`` (other libraries' at WARNING) to stderr, with time and source."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("genbot").setLevel(level)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT (Ctrl-C) or SIGTERM, so loops can stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@app.command()
@friendly_errors
def serve(
    worker: Annotated[bool, typer.Option(help="run an embedded job worker")] = True,
    scheduler: Annotated[bool, typer.Option(help="run the schedule loop")] = True,
    api: Annotated[bool, typer.Option(help="serve the HTTP API ([api] host and port)")] = False,
    discord: Annotated[bool, typer.Option(help="run the Discord bot when DISCORD_TOKEN is set")] = True,
) -> None:
    """Run genbot until Ctrl-C or SIGTERM: job worker, scheduler, the API (--api), the Discord bot (DISCORD_TOKEN)."""
    import torch

    from genbot.config import load_settings

    settings = load_settings()
    if api:
        from genbot.frontends.api.app import check_bind

        check_bind(settings.api)  # refuse an open public address before loading any model
    torch.set_num_threads(settings.engine.torch_threads)
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


async def run_until_stopped(loops: dict[str, Coroutine[Any, Any, Any]], stop: asyncio.Event) -> None:
    """Run ``loops`` as tasks until ``stop`` is set or one of them fails; then let the rest wind down."""
    tasks = {asyncio.create_task(coro, name=f"genbot-{name}"): name for name, coro in loops.items()}
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in (t for t in tasks if t.done() and t.exception() is not None):
        log.error("%s stopped with an error; shutting down", tasks[task], exc_info=task.exception())
    stop.set()
    _, pending = await asyncio.wait([*tasks, stopper], timeout=STOP_GRACE_S)
    for task in pending:
        log.warning("%s did not stop within %.0f s; cancelling it", tasks.get(task, "a task"), STOP_GRACE_S)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

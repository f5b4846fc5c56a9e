"""``genbot discord``: run the Discord bot (with an embedded job worker) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from genbot.config import Settings
from genbot.frontends.cli import app, friendly_errors
from genbot.frontends.commands_serve import run_until_stopped, setup_logging, stop_on_signals


@app.command("discord")
@friendly_errors
def discord_bot(
    worker: Annotated[bool, typer.Option(help="run an embedded job worker (for /admin retrain)")] = True,
) -> None:
    """Run the Discord bot; the token is read from the DISCORD_TOKEN environment variable only."""
    import torch

    from genbot.config import load_settings
    from genbot.frontends.discord.bot import require_token

    settings = load_settings()
    require_token(settings)  # fail before loading any model
    torch.set_num_threads(settings.engine.torch_threads)
    setup_logging(settings.log_level)
    asyncio.run(_run(settings, worker))


async def _run(settings: Settings, with_worker: bool) -> None:
    """Open the service and run the bot (and the worker) until stopped."""
    from genbot.frontends.discord import run_bot
    from genbot.service import GenbotService

    stop = stop_on_signals()
    async with GenbotService(settings) as service:
        loops: dict[str, Coroutine[Any, Any, Any]] = {"discord": run_bot(service, stop)}
        if with_worker:
            loops["worker"] = service.jobs.worker().run(stop)
        await run_until_stopped(loops, stop)

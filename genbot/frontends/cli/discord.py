"""``genbot discord``: run the Discord bot (with an embedded job worker) until Ctrl-C or SIGTERM.

``genbot discord sync`` registers the app commands with Discord once (after installing or
upgrading genbot): globally, or to ``[discord] guild_ids`` for instant updates while testing.
The bot itself never syncs, so restarts cost no rate-limited calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from genbot.config import Settings
from genbot.frontends.cli.common import friendly_errors, run_until_stopped, setup_logging, stop_on_signals

app = typer.Typer()
discord_app = typer.Typer(help="The Discord bot: run it, or sync its commands.")
app.add_typer(discord_app, name="discord")


@discord_app.callback(invoke_without_command=True)
@friendly_errors
def discord_bot(
    ctx: typer.Context,
    worker: Annotated[bool, typer.Option(help="run an embedded job worker (for /admin retrain)")] = True,
) -> None:
    """Run the Discord bot; the token is read from the DISCORD_TOKEN environment variable only."""
    if ctx.invoked_subcommand is not None:
        return
    from genbot.config import load_settings
    from genbot.frontends.discord.bot import require_token
    from genbot.runtime import set_torch_threads

    settings = load_settings()
    require_token(settings)  # fail before loading any model
    set_torch_threads(settings.engine.torch_threads)
    setup_logging(settings.log_level)
    asyncio.run(_run(settings, worker))


@discord_app.command("sync")
@friendly_errors
def sync() -> None:
    """Register the slash commands with Discord: globally, or to the servers in guild_ids (instant)."""
    from genbot.config import load_settings
    from genbot.frontends.discord.bot import require_token

    settings = load_settings()
    require_token(settings)
    setup_logging(settings.log_level)
    for line in asyncio.run(_sync(settings)):
        typer.echo(f"synced {line}")


async def _sync(settings: Settings) -> list[str]:
    """Open the service (plugin cogs add commands too) and sync once."""
    from genbot.frontends.discord.bot import sync_commands_once
    from genbot.service import GenbotService

    async with GenbotService(settings) as service:
        return await sync_commands_once(service)


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

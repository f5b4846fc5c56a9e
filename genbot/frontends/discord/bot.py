"""``GenbotBot``: the discord.py client, its explicit setup and shutdown, and ``run_bot``.

One ``GenbotService`` (owned by the caller) serves every command. ``setup_hook`` adds the cogs
(built-in and those plugins register through the ``register_cogs`` hook), installs the error
handler that turns genbot's errors into ephemeral replies, and learns the bot's owners (the
application's owner or team, plus ``[discord] owner_ids``). Commands are not synced at start
(that is ``genbot discord sync``, run once after an upgrade): syncing on every start wastes a
rate-limited call and can briefly drop commands. Background tasks (retrain status messages,
mention replies) belong to the bot and are cancelled when it closes.

The bot is discord.py's ``AutoShardedBot``: by default one process runs as many gateway shards
as Discord recommends; ``[discord] shard_count`` and ``shard_ids`` let several processes each
run some shards of one application. Nothing per-user lives in the process (quotas, cooldowns
and history are in the database), so a user's limits hold whichever shard their server is on.

Two kinds of power: bot owners act on everything shared by every server (models, versions,
jobs, corpora, global quotas); server admins (Manage Server, or the ``admin_role_id`` role)
only on their own server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from genbot.config import DiscordSettings
from genbot.errors import ConfigError, GenbotError, RetryLater, describe
from genbot.frontends.discord.admin import AdminCommands
from genbot.frontends.discord.caption import CaptionCommands
from genbot.frontends.discord.commands import (
    GenerateCommands,
    describe_error,
    generate_reply,
    stream_generation,
    subjects_of,
)
from genbot.frontends.discord.inspect import InspectCommands
from genbot.frontends.discord.mention import answer_mention
from genbot.frontends.discord.presets import PresetCommands
from genbot.frontends.discord.views import FollowUpButton
from genbot.service import GenbotService, GenerationRequest

log = logging.getLogger("genbot.discord")


class GenbotBot(commands.AutoShardedBot):
    """The Discord bot: slash commands over a ``GenbotService``."""

    def __init__(self, service: GenbotService, settings: DiscordSettings | None = None) -> None:
        self.service = service
        self.settings = settings or service.settings.discord
        intents = discord.Intents.default()
        intents.message_content = self.settings.mention_trigger  # privileged: only when the trigger is on
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),  # model output must never ping anyone
            **shard_options(self.settings),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.owner_ids: set[int] = set(self.settings.owner_ids)

    async def setup_hook(self) -> None:
        """Add the cogs, install the error handler and learn the owners."""
        await self.add_cog(GenerateCommands(self))
        await self.add_cog(AdminCommands(self))
        await self.add_cog(InspectCommands(self))
        await self.add_cog(CaptionCommands(self))
        await self.add_cog(PresetCommands(self))
        # Continue / Again under any finished reply, also those sent before this process started.
        self.add_dynamic_items(FollowUpButton)
        for cog in plugin_cogs(self.service):
            await self.add_cog(cog(self))
        self.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]
        await self.load_owners()

    async def load_owners(self) -> None:
        """Add the application's owner, or its team's admins and developers, to ``owner_ids``."""
        try:
            app = self.application or await self.application_info()
        except discord.HTTPException:
            log.warning("could not fetch the application's owners; only [discord] owner_ids are owners")
            return
        if app.team is not None:
            roles = (discord.TeamMemberRole.admin, discord.TeamMemberRole.developer)  # not read-only members
            self.owner_ids.update(m.id for m in app.team.members if m.role in roles)
        elif app.owner is not None:
            self.owner_ids.add(app.owner.id)

    async def sync_commands(self) -> list[str]:
        """Sync to the configured guilds (instant), or globally (can take an hour to show); say where."""
        if not self.settings.guild_ids:
            synced = await self.tree.sync()
            return [f"{len(synced)} commands globally"]
        done = []
        for guild_id in self.settings.guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            done.append(f"{len(synced)} commands to server {guild_id}")
        return done

    async def close(self) -> None:
        """Cancel background tasks, then disconnect."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().close()

    def background(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run ``coro`` as a task the bot owns (cancelled on close; errors logged)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def loaded_models(self) -> list[str]:
        """Names of the models that can serve now."""
        return [entry.name for entry in self.service.models() if entry.status == "loaded"]

    def is_owner_id(self, user_id: int) -> bool:
        """Whether ``user_id`` is one of the bot's owners (global powers)."""
        return user_id in self.owner_ids

    def is_server_admin(self, interaction: discord.Interaction) -> bool:
        """Manage Server, or the ``admin_role_id`` role, in the server the interaction comes from."""
        if interaction.guild_id is None:
            return False
        if interaction.permissions.manage_guild:
            return True
        role_id, user = self.settings.admin_role_id, interaction.user
        # Member.roles resolves only this server's roles, so a role id from another server never counts.
        return role_id is not None and isinstance(user, discord.Member) and user.get_role(role_id) is not None

    def may_moderate(self, interaction: discord.Interaction) -> bool:
        """An owner anywhere, or a server admin in their own server (e.g. to stop a generation)."""
        return self.is_owner_id(interaction.user.id) or self.is_server_admin(interaction)

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Tell the user what went wrong, ephemerally; log what is not genbot's own error."""
        if isinstance(error, app_commands.CheckFailure) and interaction.response.is_done():
            return  # the check already answered (e.g. the admin refusal)
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if not isinstance(original, GenbotError | app_commands.CheckFailure):
            log.error("/%s failed", interaction.command.name if interaction.command else "?", exc_info=original)
        await send_ephemeral(interaction, error_message(original))

    async def follow_up(self, interaction: discord.Interaction, request: GenerationRequest) -> None:
        """Stream ``request`` as the answer to a button press; a button's errors reach no command handler."""
        try:
            await generate_reply(self, interaction, request)
        except Exception as error:
            if not isinstance(error, GenbotError):
                log.error("a button press failed", exc_info=error)
            await send_ephemeral(interaction, error_message(error))

    async def on_message(self, message: discord.Message) -> None:
        """The optional mention trigger: '@genbot prompt' streams a reply in the channel."""
        if not self.settings.mention_trigger or message.author.bot or self.user is None:
            return
        if self.user not in message.mentions:
            return
        self.background(answer_mention(self, message), name=f"genbot-discord-mention-{message.id}")


def error_message(error: BaseException) -> str:
    """What the user is told: the error's wording, and when to try again for a quota refusal."""
    message = describe_error(error)
    if isinstance(error, RetryLater) and describe(error).discord_retry_hint:
        message += f" (try again <t:{int(discord.utils.utcnow().timestamp() + error.retry_after) + 1}:R>)"
    return message


async def send_ephemeral(interaction: discord.Interaction, message: str) -> None:
    """Answer ephemerally whether or not the interaction was answered (or deferred) already."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message[:2000], ephemeral=True)
        else:
            await interaction.response.send_message(message[:2000], ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about an error: %s", message)


def shard_options(settings: DiscordSettings) -> dict[str, Any]:
    """AutoShardedBot's shard arguments: none (ask Discord how many, run all), or this process's share."""
    options: dict[str, Any] = {}
    if settings.shard_count is not None:
        options["shard_count"] = settings.shard_count
    if settings.shard_ids is not None:
        options["shard_ids"] = list(settings.shard_ids)  # the config validated them against shard_count
    return options


def plugin_cogs(service: GenbotService) -> list[type[commands.Cog]]:
    """Cog classes plugins offer through ``register_cogs`` (a failing plugin is logged and skipped)."""
    from genbot.plugins import call_each, load_plugins

    cogs: list[type[commands.Cog]] = []
    try:
        plugins = service.plugins if service.plugins is not None else load_plugins(service.settings)
        call_each(plugins, "register_cogs", register=cogs.append)
    except GenbotError:
        log.exception("plugin cogs could not be loaded; running without them")
    return cogs


def require_token(service_settings: Any) -> str:
    """The bot token from DISCORD_TOKEN, or a ConfigError that says how to set it."""
    token = service_settings.discord_token
    if token is None or not token.get_secret_value().strip():
        raise ConfigError("no Discord token: set the DISCORD_TOKEN environment variable")
    return str(token.get_secret_value().strip())


async def sync_commands_once(service: GenbotService) -> list[str]:
    """Log in (no gateway), sync the app commands once, log out; returns where they went."""
    bot = GenbotBot(service)
    async with bot:
        await bot.login(require_token(service.settings))  # login runs setup_hook: the full tree
        return await bot.sync_commands()


async def run_bot(service: GenbotService, stop: asyncio.Event) -> None:
    """Run the bot until ``stop`` is set (a ``genbot serve`` loop, and ``genbot discord``)."""
    token = require_token(service.settings)
    bot = GenbotBot(service)
    async with bot:
        runner = asyncio.create_task(bot.start(token), name="genbot-discord-client")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
        await bot.close()
        stopper.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]


__all__ = ["GenbotBot", "require_token", "run_bot", "stream_generation", "subjects_of", "sync_commands_once"]

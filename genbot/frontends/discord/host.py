"""What the cogs need from the bot, as a protocol: the cogs import this, ``bot.py`` imports the cogs.

``GenbotBot`` (in ``bot.py``) is the one implementation; tests may pass anything with these members.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import discord

if TYPE_CHECKING:
    from genbot.config import DiscordSettings
    from genbot.service import GenbotService, GenerationRequest


class BotHost(Protocol):
    """The bot as its cogs see it: the service, the Discord settings, background tasks, permissions."""

    service: GenbotService
    settings: DiscordSettings

    def background(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run ``coro`` as a task the bot keeps (and cancels on close)."""

    def loaded_models(self) -> list[str]:
        """Names of the models that can serve now."""

    def is_owner_id(self, user_id: int) -> bool:
        """Whether ``user_id`` is one of the bot's owners (global powers)."""

    def is_server_admin(self, interaction: discord.Interaction) -> bool:
        """Manage Server, or the ``admin_role_id`` role, in the server the interaction comes from."""

    def may_moderate(self, interaction: discord.Interaction) -> bool:
        """An owner anywhere, or a server admin in their own server."""

    async def follow_up(self, interaction: discord.Interaction, request: GenerationRequest) -> None:
        """Stream ``request`` as the answer to a button press (Continue, Again); errors answered ephemerally."""

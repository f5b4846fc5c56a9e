"""The Stop button shown under a streaming reply; Continue and Again under a finished one."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import discord

from genbot.errors import NotFound
from genbot.service import Generation, GenerationRequest, Identity

if TYPE_CHECKING:
    from genbot.frontends.discord.host import BotHost

log = logging.getLogger("genbot.discord")

STOP_TIMEOUT_S = 15 * 60.0  # an interaction token lasts 15 minutes; so does the button


class StopView(discord.ui.View):
    """One red Stop button that cancels a generation (for its requester, a server admin or an owner)."""

    def __init__(
        self, generation: Generation, requester_id: int, may_moderate: Callable[[discord.Interaction], bool]
    ) -> None:
        super().__init__(timeout=STOP_TIMEOUT_S)
        self.generation = generation
        self.requester_id = requester_id
        self.may_moderate = may_moderate
        self.stop_button.custom_id = f"genbot:stop:{generation.id}"

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Only the requester (or a server admin or owner) may stop it; others get an ephemeral refusal."""
        if interaction.user.id == self.requester_id or self.may_moderate(interaction):
            return True
        await interaction.response.send_message("Only the person who asked can stop this.", ephemeral=True)
        return False

    @discord.ui.button(label="Stop", style=discord.ButtonStyle.danger)
    async def stop_button(self, interaction: discord.Interaction, button: discord.ui.Button[StopView]) -> None:
        """Cancel the generation; the streaming loop writes the final 'cancelled' footer."""
        self.generation.cancel()
        self.stop()
        await interaction.response.defer()


_LABELS = {"continue": ("Continue", discord.ButtonStyle.primary), "again": ("Again", discord.ButtonStyle.secondary)}


class FollowUpButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"genbot:(?P<action>continue|again):(?P<id>[0-9]{1,18})",
):
    """Continue or Again under a finished reply; the generation id lives in the custom_id, so it survives restarts.

    Only the person who asked (or an owner, or an admin of the server the reply is in) may press it;
    anyone else gets an ephemeral refusal. The new reply streams as an answer to the press.
    """

    def __init__(self, action: str, generation_id: int) -> None:
        label, style = _LABELS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"genbot:{action}:{generation_id}"))
        self.action = action
        self.generation_id = generation_id
        self.as_admin = False  # set by interaction_check: pressed by an owner or that server's admin

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> FollowUpButton:
        """The button a press names (ids too long for a generation never match the template)."""
        return cls(match["action"], int(match["id"]))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """The requester, an owner, or an admin of the reply's server; others are refused ephemerally."""
        bot = cast("BotHost", interaction.client)
        user_id = str(interaction.user.id)
        try:
            await bot.service.generation(self.generation_id, Identity("discord", user_id))
            return True
        except NotFound:
            pass
        admin_here = bot.is_server_admin(interaction) and await self._in_this_server(bot, interaction)
        if bot.is_owner_id(interaction.user.id) or admin_here:
            self.as_admin = True
            return True
        await interaction.response.send_message("Only the person who asked can use these buttons.", ephemeral=True)
        return False

    async def _in_this_server(self, bot: BotHost, interaction: discord.Interaction) -> bool:
        try:
            row = await bot.service.generation(self.generation_id, Identity("discord", admin=True))
        except NotFound:
            return False
        return interaction.guild_id is not None and row.guild_id == str(interaction.guild_id)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Stream the continuation (or the new-seed repeat) as the answer to this press."""
        bot = cast("BotHost", interaction.client)
        which = {"continue_from" if self.action == "continue" else "again_of": self.generation_id}
        await bot.follow_up(interaction, GenerationRequest(model="", admin=self.as_admin, **which))  # type: ignore[arg-type]


class FollowUpView(discord.ui.View):
    """The buttons left under a finished reply: Continue and Again (no timeout: they work after a restart)."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(timeout=None)
        self.add_item(FollowUpButton("continue", generation_id))
        self.add_item(FollowUpButton("again", generation_id))

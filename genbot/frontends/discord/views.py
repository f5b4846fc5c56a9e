"""The Stop button shown under a streaming reply."""

from __future__ import annotations

from collections.abc import Callable

import discord

from genbot.service import Generation

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

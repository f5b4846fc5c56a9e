"""``/preset save|use|list|delete``: named settings per Discord user, and global ones for the bot's owners."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from genbot.errors import InvalidRequest
from genbot.frontends.discord.commands import generate_reply
from genbot.service import GenerationRequest, Identity, preset_params

if TYPE_CHECKING:
    from genbot.frontends.discord.host import BotHost

MAX_LISTED = 25


class PresetCommands(commands.GroupCog, group_name="preset"):
    """Save the settings you like under a name and generate with them."""

    def __init__(self, bot: BotHost) -> None:
        self.bot = bot

    def _owner(self, interaction: discord.Interaction) -> Identity:
        return Identity("discord", user_id=str(interaction.user.id))

    def _check_global(self, interaction: discord.Interaction, global_: bool) -> None:
        if global_ and not self.bot.is_owner_id(interaction.user.id):
            raise InvalidRequest("only the bot's owners save or delete global presets")

    @app_commands.command(name="save")
    @app_commands.rename(global_="global")
    async def save(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        model: str | None = None,
        temperature: app_commands.Range[float, 0.0, 5.0] | None = None,
        length: app_commands.Range[int, 1, 5000] | None = None,
        top_k: app_commands.Range[int, 0, 1_000_000] | None = None,
        top_p: app_commands.Range[float, 0.01, 1.0] | None = None,
        seed: app_commands.Range[int, 0, 2**53] | None = None,
        global_: bool = False,
    ) -> None:
        """Save settings under a name (a seed makes every use give the same text).

        Args:
            name: 1-64 letters, digits, _ . -
            model: which model (see /models)
            temperature: randomness, 0 = always the likeliest character
            length: characters to generate
            top_k: keep the k likeliest characters (0 = off)
            top_p: nucleus cut-off (1 = off)
            seed: a fixed seed; leave out for a new one each time
            global_: for everyone (the bot's owners only)
        """
        self._check_global(interaction, global_)
        if model is not None and model not in self.bot.loaded_models():
            raise InvalidRequest(f"unknown model {model!r}; /models lists them")
        params = preset_params(model=model, temperature=temperature, length=length, top_k=top_k, top_p=top_p, seed=seed)
        owner = self._owner(interaction).preset_owner
        row = await self.bot.service.presets.save(owner, name, params, global_=global_)
        where = "global preset" if row.is_global else "preset"
        await interaction.response.send_message(f"Saved {where} `{row.name}`: {row.params.summary()}", ephemeral=True)

    @app_commands.command(name="use")
    async def use(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64], prompt: str = ""
    ) -> None:
        """Generate with a saved preset (yours, else a global one).

        Args:
            name: the preset (see /preset list)
            prompt: text the model continues
        """
        await generate_reply(self.bot, interaction, GenerationRequest(model="", prompt=prompt, preset=name))

    @app_commands.command(name="list")
    async def list_presets(self, interaction: discord.Interaction) -> None:
        """Your presets and the global ones (only you see them)."""
        rows = await self.bot.service.presets.list(self._owner(interaction).preset_owner)
        lines = [f"`{r.name}`{' (global)' if r.is_global else ''}: {r.params.summary()}" for r in rows[:MAX_LISTED]]
        text = "\n".join(lines) or "You have no presets yet: /preset save keeps your settings under a name."
        await interaction.response.send_message(text[:2000], ephemeral=True)

    @app_commands.command(name="delete")
    @app_commands.rename(global_="global")
    async def delete(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64], global_: bool = False
    ) -> None:
        """Delete one of your presets.

        Args:
            name: the preset (see /preset list)
            global_: a global preset (the bot's owners only)
        """
        self._check_global(interaction, global_)
        await self.bot.service.presets.delete(self._owner(interaction).preset_owner, name, global_=global_)
        await interaction.response.send_message(f"Deleted preset `{name}`.", ephemeral=True)

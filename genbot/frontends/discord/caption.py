"""``/caption image``: describe an attached image with a captioner model.

The attachment is downloaded (after a size check) and handed to ``GenbotService.caption``, which
decodes it safely and stores the request like a generation; bad images become ephemeral errors.
A caption is charged to the same quotas as /generate (its characters, the concurrency slot and
the cooldown), decided before the deferral so a refusal stays ephemeral.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from genbot.engine.captions import CaptionResult
from genbot.errors import ImageError, InvalidRequest, UnknownModel
from genbot.frontends.discord.commands import AUTOCOMPLETE_MAX, drop_thinking, subjects_of
from genbot.networks.images import MAX_BYTES
from genbot.service import Requester

if TYPE_CHECKING:
    from genbot.engine.registry import GeneratorEntry
    from genbot.frontends.discord.host import BotHost

MESSAGE_LIMIT = 2000
CAPTION_RESERVE_CHARS = 500  # reserved from the daily quota while captioning (captions are short)


def is_captioner(entry: GeneratorEntry) -> bool:
    """Whether a registry entry is a loaded captioner."""
    return entry.status == "loaded" and entry.card is not None and entry.card.kind == "captioner"


def caption_reply(result: CaptionResult) -> str:
    """The best caption, the top captions with their log-probabilities, and a footer line."""
    shown = "\n".join(f"{c.logprob:8.3f}  {c.text}" for c in result.captions)
    method = f"beam {result.beam}" if result.method == "beam" else f"temp {result.temperature:g} · seed {result.seed}"
    footer = f"-# {result.model} v{result.version} · {method} · {result.image} · {result.duration_ms:,.0f} ms"
    best = f"**{discord.utils.escape_markdown(result.text)}**" if result.text else "*(no caption)*"
    reply = f"{best}\n```\n{shown}\n```\n{footer}"
    return reply if len(reply) <= MESSAGE_LIMIT else reply[: MESSAGE_LIMIT - 1] + "…"


class CaptionCommands(commands.Cog):
    """``/caption``: describe an image."""

    def __init__(self, bot: BotHost) -> None:
        self.bot = bot

    def captioners(self) -> list[str]:
        """Names of the loaded captioner models."""
        return [e.name for e in self.bot.service.models() if is_captioner(e)]

    def pick_model(self, model: str | None) -> str:
        """The named captioner, or the first loaded one; errors say what is available."""
        names = self.captioners()
        if model is None:
            if not names:
                raise InvalidRequest("no captioner model is loaded")
            return names[0]
        if model not in self.bot.loaded_models():
            raise UnknownModel(model, self.bot.loaded_models())
        if model not in names:
            raise InvalidRequest(f"model {model!r} generates text, not captions; pick one of: {', '.join(names)}")
        return model

    @app_commands.command(name="caption")
    async def caption(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        model: str | None = None,
        temperature: app_commands.Range[float, 0.0, 5.0] | None = None,
        seed: app_commands.Range[int, 0, 2**53] | None = None,
    ) -> None:
        """Describe an image in words (the top captions with their log-probabilities).

        Args:
            image: a picture (PNG, JPEG, GIF, WebP, BMP)
            model: which captioner (default: the first loaded)
            temperature: 0 or unset = beam search; above 0 = sample with this randomness
            seed: same seed, same sampled caption
        """
        name = self.pick_model(model)
        if image.size > MAX_BYTES:
            raise ImageError(f"the image is {image.size:,} bytes; the limit is {MAX_BYTES:,}")
        admission = await self.bot.service.quotas.admit(
            subjects_of(self.bot, interaction.user.id, interaction.guild_id),
            chars=CAPTION_RESERVE_CHARS,
        )
        chars = 0
        try:
            await interaction.response.defer(thinking=True)
            result = await self._run(interaction, name, await image.read(), temperature or None, seed)
            chars = len(result.text)
        except BaseException:
            await drop_thinking(interaction)  # the error handler then answers ephemerally
            raise
        finally:
            await admission.finish(chars)
        await interaction.followup.send(caption_reply(result))

    async def _run(
        self, interaction: discord.Interaction, model: str, data: bytes, temperature: float | None, seed: int | None
    ) -> CaptionResult:
        """Caption ``data`` for the interaction's user, server and channel."""
        return await self.bot.service.caption(
            model, data, temperature=temperature, seed=seed, requester=Requester(
                "discord", user_id=str(interaction.user.id),
                guild_id=str(interaction.guild_id) if interaction.guild_id else None,
                channel_id=str(interaction.channel_id) if interaction.channel_id else None,
            ),
        )  # fmt: skip

    @caption.autocomplete("model")
    async def _model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Loaded captioners whose name contains what was typed."""
        names = [n for n in self.captioners() if current.lower() in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_MAX]]

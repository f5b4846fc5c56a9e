"""``/inspect``: colour a text by one unit's activation and reply with the picture.

The inspection itself is ``GenbotService.inspect`` (CPU-heavy tracing and rendering in a worker
thread), so the bot runs at most ``MAX_INSPECTIONS`` at once and refuses more as busy.
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from genbot.analysis.features import FEATURES
from genbot.analysis.report import InspectReport, InspectRequest
from genbot.errors import Busy, InvalidRequest, UnknownModel
from genbot.frontends.discord.caption import is_captioner
from genbot.frontends.discord.commands import AUTOCOMPLETE_MAX, drop_thinking

if TYPE_CHECKING:
    from genbot.frontends.discord.host import BotHost

MAX_TEXT_CHARS = 2000  # what one Discord message holds; longer texts belong to the CLI
MAX_INSPECTIONS = 2  # tracing and rendering are seconds of CPU each
BUSY_RETRY_S = 5.0
MESSAGE_LIMIT = 2000
FEATURE_CHOICES = [app_commands.Choice(name=name, value=name) for name in FEATURES]


def inspect_summary(report: InspectReport) -> str:
    """The report's lines in a code block, cut to fit one Discord message."""
    body = "\n".join(report.lines())
    room = MESSAGE_LIMIT - len("```\n\n```")
    if len(body) > room:
        body = body[: room - 1] + "…"
    return f"```\n{body}\n```"


def png_file(report: InspectReport) -> discord.File:
    """The unit view as an attachment named after the model and unit."""
    u = report.unit
    name = f"{report.model}-L{u.layer}-{u.kind}{u.index}.png"
    return discord.File(io.BytesIO(report.files["unit.png"]), filename=name)


class InspectCommands(commands.Cog):
    """``/inspect``: look inside a model."""

    def __init__(self, bot: BotHost) -> None:
        self.bot = bot
        self.slots = asyncio.Semaphore(MAX_INSPECTIONS)

    @app_commands.command(name="inspect")
    @app_commands.choices(find=FEATURE_CHOICES)
    async def inspect(
        self,
        interaction: discord.Interaction,
        model: str,
        text: app_commands.Range[str, 2, MAX_TEXT_CHARS],
        unit: app_commands.Range[int, 0, 100_000] | None = None,
        layer: app_commands.Range[int, 0, 1000] | None = None,
        find: app_commands.Choice[str] | None = None,
    ) -> None:
        """Colour a text by one unit's activation (or find the unit tracking a feature).

        Args:
            model: which model (see /models)
            text: the text to run through the model
            unit: which unit, counted from 0 (default: the best found, else the most variable)
            layer: which layer, counted from 0 (default: the top one)
            find: a feature to find the best unit for
        """
        self.check_model(model)
        if len(text) > MAX_TEXT_CHARS:  # Discord enforces the option's max_length; a client might not
            raise InvalidRequest(f"the text has {len(text):,} characters; /inspect reads at most {MAX_TEXT_CHARS:,}")
        if self.slots.locked():
            raise Busy(f"{MAX_INSPECTIONS} inspections are running; try again in a few seconds", BUSY_RETRY_S)
        request = InspectRequest(text=text, layer=layer, unit=unit, find=find.value if find else None)
        async with self.slots:
            await interaction.response.defer(thinking=True)
            try:
                report = await self.bot.service.inspect(model, request)
            except BaseException:
                await drop_thinking(interaction)  # the error handler then answers ephemerally
                raise
        await interaction.followup.send(inspect_summary(report), file=png_file(report))

    def text_models(self) -> list[str]:
        """Loaded models that read text (captioners have no characters to colour)."""
        return [e.name for e in self.bot.service.models() if e.status == "loaded" and not is_captioner(e)]

    def check_model(self, model: str) -> None:
        """UnknownModel, or InvalidRequest for a captioner."""
        if model not in self.bot.loaded_models():
            raise UnknownModel(model, self.text_models())
        if model not in self.text_models():
            raise InvalidRequest(f"model {model!r} describes images; /inspect looks inside text models")

    @inspect.autocomplete("model")
    async def _model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Loaded text models whose name contains what was typed."""
        names = [n for n in self.text_models() if current.lower() in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_MAX]]

"""The app commands: /generate, /models, /history, /forget-me, /jobs (descriptions from docstrings)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from genbot.errors import GenbotError, UnknownModel
from genbot.frontends.discord.streaming import InteractionPages, StreamingReply
from genbot.frontends.discord.views import FollowUpView, StopView
from genbot.quotas.policy import Admission, Limits, Subject
from genbot.service import Generation, GenerationRequest, GenerationResult, Requester

if TYPE_CHECKING:
    from genbot.engine.registry import GeneratorEntry
    from genbot.frontends.discord.host import BotHost
    from genbot.jobs.control import JobRow

log = logging.getLogger("genbot.discord")
AUTOCOMPLETE_MAX = 25  # Discord shows at most 25 choices
EMBEDS_PER_MESSAGE = 10
HISTORY_ROWS = 10


def member_subject_id(guild_id: int, user_id: int) -> str:
    """The quota subject of a user within one server ("<guild id>:<user id>", scope 'user')."""
    return f"{guild_id}:{user_id}"


def subjects_of(bot: BotHost, user_id: int, guild_id: int | None) -> list[Subject]:
    """The quota subjects of a request: the user, and in a server the server and the user there.

    The last one carries only what that server's admins stored (no defaults), so a server admin
    can narrow a member's limits in their server but never lift the global user or server limits.
    """
    q = bot.settings.quotas
    user = Subject("user", str(user_id), Limits(q.user_chars_per_day, q.user_concurrent, q.user_cooldown_s))
    if guild_id is None:
        return [user]
    guild = Subject("guild", str(guild_id), Limits(q.guild_chars_per_day, q.guild_concurrent, None))
    return [user, guild, Subject("user", member_subject_id(guild_id, user_id))]


def capped_length(requested: int | None, remaining: int | None, default: int) -> int | None:
    """The length to ask for: what was asked (or the default), at most what the quota has left today."""
    if remaining is None:
        return requested
    return min(requested or default, remaining)


def footer_for(generation: Generation, result: GenerationResult) -> str:
    """The small line under a finished reply: model, version, temperature, seed, speed, status."""
    p = generation.params
    parts = [f"{generation.model} v{generation.version}", f"temp {p.temperature:g}", f"seed {p.seed}"]
    parts.append(f"{len(result.output):,} chars · {result.stats.chars_per_s:,.0f} chars/s")
    if result.status != "completed":
        parts.append(result.status + (f": {result.stats.error}" if result.stats.error else ""))
    return "-# " + " · ".join(parts)


def replaced_note(generation: Generation) -> str:
    """Say which prompt characters the model could not read, as the other front ends do."""
    notes = []
    if generation.mapped:
        notes.append("replaced " + ", ".join(f"{a!r}→{b!r}" for a, b in generation.mapped.items()))
    if generation.dropped:
        notes.append("left out " + ", ".join(repr(c) for c in generation.dropped))
    return f"-# prompt: {'; '.join(notes)}" if notes else ""


async def stream_generation(
    bot: BotHost, generation: Generation, pages: InteractionPages, requester_id: int, admission: Admission
) -> GenerationResult:
    """Stream into ``pages`` with a Stop button, then record the characters against the quotas.

    The finished reply keeps Continue and Again buttons that still work after a restart.
    """
    view = StopView(generation, requester_id, bot.may_moderate)
    lang = generation.entry.card.sampling.code_fence if generation.entry.card else None
    reply = StreamingReply(
        pages, prefix="", lang=lang or None, interval=bot.settings.edit_interval_s, view=view,
        final_view=FollowUpView(generation.id),
    )  # fmt: skip
    try:
        return await reply.run(generation, lambda result: _footer_with_note(generation, result))
    finally:
        view.stop()
        await admission.finish(len(generation.stream.output))


def _footer_with_note(generation: Generation, result: GenerationResult) -> str:
    note = replaced_note(generation)
    return footer_for(generation, result) + (f"\n{note}" if note else "")


async def generate_reply(bot: BotHost, interaction: discord.Interaction, request: GenerationRequest) -> None:
    """Admit the user under the quotas, defer publicly, then stream ``request`` as the reply.

    ``request`` carries what to generate; who asks, where, and the length cap come from here.
    """
    service = bot.service
    guild_id = interaction.guild_id
    request = dataclasses.replace(
        request,
        requester=Requester(
            frontend="discord",
            user_id=str(interaction.user.id),
            guild_id=str(guild_id) if guild_id else None,
            channel_id=str(interaction.channel_id) if interaction.channel_id else None,
        ),
    )
    # Read the preset and the continued generation once (unknown ids: refused here, before any quota
    # is touched); what is generated is exactly what the length to reserve was taken from.
    resolved = await service.resolve(request)
    wanted = resolved.request.length or service.settings.sampling.length  # reserved until it ends
    # Quota refusals must be ephemeral, so they are decided before the (public) deferral.
    admission = await service.quotas.admit(subjects_of(bot, interaction.user.id, guild_id), chars=wanted)
    try:
        await interaction.response.defer(thinking=True)
        length = capped_length(resolved.request.length, admission.remaining_chars, wanted)
        generation = await service.generate(resolved.with_length(length))
    except BaseException:
        await admission.finish(0)
        await drop_thinking(interaction)  # the error handler then answers ephemerally
        raise
    await stream_generation(bot, generation, InteractionPages(interaction), interaction.user.id, admission)


class GenerateCommands(commands.Cog):
    """Commands everyone may use."""

    def __init__(self, bot: BotHost) -> None:
        self.bot = bot

    @app_commands.command(name="generate")
    async def generate(
        self,
        interaction: discord.Interaction,
        model: str,
        prompt: str,
        temperature: app_commands.Range[float, 0.0, 5.0] | None = None,
        length: app_commands.Range[int, 1, 5000] | None = None,
        seed: app_commands.Range[int, 0, 2**53] | None = None,
    ) -> None:
        """Generate text with a char-RNN model, streamed as it is written.

        Args:
            model: which model (see /models)
            prompt: text the model continues
            temperature: randomness, 0 = always the likeliest character
            length: characters to generate
            seed: same seed, same text
        """
        if model not in self.bot.loaded_models():
            raise UnknownModel(model, self.bot.loaded_models())
        request = GenerationRequest(model=model, prompt=prompt, temperature=temperature, length=length, seed=seed)
        await generate_reply(self.bot, interaction, request)

    @generate.autocomplete("model")
    async def _model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Loaded models whose name contains what was typed."""
        names = [n for n in self.bot.loaded_models() if current.lower() in n.lower()]
        return [app_commands.Choice(name=n, value=n) for n in names[:AUTOCOMPLETE_MAX]]

    @app_commands.command(name="models")
    async def models(self, interaction: discord.Interaction) -> None:
        """Show every model with its card."""
        embeds = [model_embed(entry) for entry in self.bot.service.models()]
        if not embeds:
            await interaction.response.send_message("No models are loaded.", ephemeral=True)
            return
        await interaction.response.send_message(embeds=embeds[:EMBEDS_PER_MESSAGE])
        for start in range(EMBEDS_PER_MESSAGE, len(embeds), EMBEDS_PER_MESSAGE):
            await interaction.followup.send(embeds=embeds[start : start + EMBEDS_PER_MESSAGE])

    @app_commands.command(name="history")
    @app_commands.describe(query='words to look for (best match first): love OR hate, -word, "a phrase"')
    async def history(self, interaction: discord.Interaction, query: str | None = None) -> None:
        """Your recent generations, or those matching a search (only you see them)."""
        try:
            rows = await self.bot.service.history(user_id=str(interaction.user.id), query=query, limit=HISTORY_ROWS)
        except GenbotError as e:  # a search that cannot be run: say why, to the one who typed it
            await interaction.response.send_message(describe_error(e), ephemeral=True)
            return
        if not rows:
            empty = "No stored generation of yours matches." if query else "You have no stored generations."
            await interaction.response.send_message(empty, ephemeral=True)
            return
        lines = [
            f"`#{r.id}` {r.created_at:%Y-%m-%d %H:%M} **{r.model}** {r.status} · {r.chars} chars · "
            f"{_clip(r.prompt, 40)!r} → {_clip(r.output, 60)!r}"
            for r in rows
        ]
        await interaction.response.send_message("\n".join(lines)[:2000], ephemeral=True)

    @app_commands.command(name="forget-me")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        """Delete every prompt and output of yours that genbot stored."""
        count = await self.bot.service.forget(str(interaction.user.id))
        await interaction.response.send_message(f"Deleted {count} stored generation(s).", ephemeral=True)

    @app_commands.command(name="jobs")
    async def jobs(self, interaction: discord.Interaction) -> None:
        """Recent fine-tuning jobs and their progress."""
        rows = await self.bot.service.jobs.list(limit=10)
        text = "\n".join(job_line(job) for job in rows) or "No jobs yet."
        await interaction.response.send_message(text[:2000], ephemeral=True)


def job_line(job: JobRow) -> str:
    """One line about a job: id, model, corpus, status, step."""
    progress = job.progress or {}
    step = f" · step {progress['step']}/{progress.get('total_steps', '?')}" if "step" in progress else ""
    return f"`#{job.id}` {job.model} on {job.corpus}: {job.status}{step}"


def model_embed(entry: GeneratorEntry) -> discord.Embed:
    """A model card as an embed: description, architecture, corpus, val loss, status."""
    card, name = entry.card, entry.name
    if card is None:
        return discord.Embed(title=name, description=f"failed: {entry.error}"[:4000])
    embed = discord.Embed(title=f"{name} v{card.version}", description=card.description[:4000] or None)
    arch = card.architecture
    embed.add_field(name="architecture", value=f"{arch.cell} {arch.layers}x{arch.hidden}")
    if card.corpus:
        embed.add_field(name="corpus", value=card.corpus[:1000])
    for key, value in list(card.metrics.items())[:3]:
        embed.add_field(name=key, value=f"{value:.4f}")
    if entry.status != "loaded":
        embed.add_field(name="status", value=f"failed: {entry.error}"[:1000], inline=False)
    return embed


async def drop_thinking(interaction: discord.Interaction) -> None:
    """Delete a public "thinking…" reply that will get no text, so only the ephemeral error remains."""
    if interaction.response.is_done():
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def describe_error(error: BaseException) -> str:
    """What a user is told about an error (genbot's own say what happened; others are bugs)."""
    if isinstance(error, GenbotError):
        return str(error)
    return "Something went wrong on genbot's side; it has been logged."

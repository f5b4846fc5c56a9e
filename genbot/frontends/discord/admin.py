"""The /admin group: corpora, retraining from chat, model versions, quotas, job cancels.

Two kinds of admin, because one bot serves many servers and anyone can create a server and
invite it. Bot owners (the application's owner or team, or ``[discord] owner_ids``) run what
changes genbot for every server: corpora, retrains, versions, jobs and the global user and
server quotas. Server admins (Manage Server, or the ``[discord] admin_role_id`` role, in that
server) may only set their members' quotas in their own server. A command is owner-only unless
it is marked ``SERVER_ADMIN`` (fail closed); everyone else gets an ephemeral refusal. The group
is hidden from members without Manage Server by default and does not exist in DMs.

A retrain keeps one channel message updated with the
job's progress (a channel message, not the interaction reply, because an interaction token
expires after 15 minutes and trainings often run longer).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from genbot.errors import CorpusError, GenbotError, InvalidRequest
from genbot.frontends.discord.commands import member_subject_id
from genbot.jobs.spec import RetrainRequest
from genbot.service import GenerationRequest, Requester
from genbot.training.launch import MAX_NPROC

if TYPE_CHECKING:
    from genbot.frontends.discord.host import BotHost
    from genbot.jobs.control import JobRow

log = logging.getLogger("genbot.discord")
JOB_POLL_S = 2.0  # how often a retrain's status message is refreshed (well under Discord's edit pace)
SAMPLE_CHARS = 300  # length of the sample posted from a newly trained version
NEW_VERSION_WAIT_S = 30.0  # how long to wait for servers to pick up a newly activated version
DEFAULT_STEPS = 500  # a retrain's budget when neither steps nor seconds is given
WHO = "genbot_who"  # key in a command's extras: who may run it
SERVER_ADMIN = {WHO: "server-admin"}  # extras of the commands a server admin may run in their own server


def job_status(job: JobRow) -> str:
    """The retrain status message: status, step, losses, ETA and the latest sample."""
    p = job.progress or {}
    lines = [f"**Job #{job.id}** · {job.model} on `{job.corpus}` · **{job.status}**"]
    if "step" in p:
        lines.append(f"step {p['step']}/{p.get('total_steps', '?')}" + _losses(p) + _eta(p))
    if job.error:
        lines.append(f"failed: {job.error[:1500]}")
    if job.status == "succeeded":
        version = job.metrics.get("version", job.result_version)
        lines.append(f"new version: v{version}")
    if p.get("sample") and not job.finished:
        lines.append(f"latest sample:\n```\n{str(p['sample'])[:600]}\n```")
    return "\n".join(lines)[:2000]


def _losses(p: dict[str, object]) -> str:
    parts = [f"{name} {p[name]:.4f}" for name in ("train_loss", "val_loss") if isinstance(p.get(name), int | float)]
    return (" · " + " · ".join(parts)) if parts else ""


def _eta(p: dict[str, object]) -> str:
    eta = p.get("eta")
    return f" · ETA {float(eta):.0f} s" if isinstance(eta, int | float) else ""


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCommands(commands.GroupCog, group_name="admin"):
    """Admin commands: corpora, retraining, versions, jobs, quotas (owners; server admins: their server)."""

    def __init__(self, bot: BotHost) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Owners may run everything; server admins only SERVER_ADMIN commands; others nothing."""
        refusal = self.refusal(interaction)
        if refusal is None:
            return True
        await interaction.response.send_message(refusal, ephemeral=True)
        return False

    def refusal(self, interaction: discord.Interaction) -> str | None:
        """Why the interaction's user may not run its command, or None when they may."""
        if self.bot.is_owner_id(interaction.user.id):
            return None
        command = interaction.command
        name = command.qualified_name if command else "admin"
        if command is not None and command.extras.get(WHO) == SERVER_ADMIN[WHO]:
            if self.bot.is_server_admin(interaction):
                return None
            role_id = self.bot.settings.admin_role_id
            needed = "Manage Server" + (f" or the <@&{role_id}> role" if role_id else "")
            return f"/{name} needs {needed} in this server."
        return f"Only the bot's owners can use /{name}: it changes genbot for every server."

    @app_commands.command(name="corpus-add")
    async def corpus_add(self, interaction: discord.Interaction, name: str, file: discord.Attachment) -> None:
        """Register a .txt attachment as a training corpus.

        Args:
            name: corpus name (a-z, 0-9, - and _)
            file: a UTF-8 .txt file
        """
        _check_attachment(file, self.bot.settings.max_corpus_bytes)
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await file.read()
        with tempfile.TemporaryDirectory(prefix="genbot-upload-") as folder:
            path = Path(folder) / "input.txt"
            await asyncio.to_thread(path.write_bytes, data)
            corpus = await self.bot.service.corpora.add(
                name, [path], description=f"uploaded on Discord: {file.filename}"
            )
        await interaction.followup.send(
            f"Corpus `{corpus.name}` registered: {corpus.size_bytes:,} bytes.", ephemeral=True
        )

    @app_commands.command(name="retrain")
    async def retrain(
        self,
        interaction: discord.Interaction,
        model: str,
        corpus: str,
        steps: app_commands.Range[int, 1, 1_000_000] | None = None,
        seconds: app_commands.Range[float, 1.0, 86_400.0] | None = None,
        start: Literal["active", "scratch"] = "active",
        nproc: app_commands.Range[int, 1, MAX_NPROC] | None = None,
    ) -> None:
        """Fine-tune a model on a corpus in the background, with live progress here.

        Args:
            model: model to fine-tune, or a new model's name (with start: scratch)
            corpus: a registered corpus
            steps: training steps (default 500 unless seconds is given)
            seconds: wall-clock budget instead of steps
            start: from the active version, or from scratch (also makes a brand-new model)
            nproc: training processes, e.g. one per GPU (default: the worker's; at most [jobs] max_nproc)
        """
        if steps is None and seconds is None:
            steps = DEFAULT_STEPS
        # Discord checks the range in its client only; the job's own check ([jobs] max_nproc) decides.
        options = {"nproc": nproc} if nproc is not None else {}
        request = RetrainRequest(
            model=model, corpus=corpus, steps=steps, seconds=seconds, source=start, options=options
        )
        job = await self.bot.service.jobs.retrain(request)
        await interaction.response.send_message(f"Queued job #{job.id}; progress follows below.")
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            return
        status = await channel.send(job_status(job))
        self.bot.background(self._follow(job.id, status), name=f"genbot-discord-job-{job.id}")

    async def _follow(self, job_id: int, status: discord.Message) -> None:
        """Keep the status message current until the job ends, then post the outcome."""
        shown = status.content
        while True:
            job = await self.bot.service.jobs.get(job_id)
            text = job_status(job)
            if text != shown:
                await status.edit(content=text)
                shown = text
            if job.finished:
                break
            await asyncio.sleep(max(JOB_POLL_S, self.bot.settings.edit_interval_s))
        if job.status == "succeeded":
            await self._post_result(job, status.channel)

    async def _post_result(self, job: JobRow, channel: discord.abc.Messageable) -> None:
        """The loss curve image and a sample from the new version (or the trainer's last sample)."""
        curve = job.metrics.get("loss_curve")
        sample = await self._sample_new_version(job)
        content = f"Job #{job.id} finished: {job.model} v{job.result_version}.\n```\n{sample[:1500]}\n```"
        if curve and Path(curve).is_file():
            await channel.send(content, file=discord.File(curve, filename="loss.png"))
        else:
            await channel.send(content)

    async def _sample_new_version(self, job: JobRow) -> str:
        """Generate from the new version once servers serve it; else the trainer's last sample."""
        fallback = str((job.progress or {}).get("sample", ""))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NEW_VERSION_WAIT_S
        while loop.time() < deadline:
            if self._serving_version(job.model) == job.result_version:
                request = GenerationRequest(
                    model=job.model,
                    length=SAMPLE_CHARS,
                    requester=Requester(frontend="discord"),
                )
                generation = await self.bot.service.generate(request)
                return (await generation.result()).output
            versions = await self.bot.service.versions.list(job.model)
            if not any(v.active and v.version == job.result_version for v in versions):
                return f"(v{job.result_version} was not activated; a training sample:)\n{fallback}"
            await asyncio.sleep(0.5)
        return fallback

    def _serving_version(self, model: str) -> int | None:
        for entry in self.bot.service.models():
            if entry.name == model and entry.card is not None:
                return entry.card.version
        return None

    @app_commands.command(name="activate")
    async def activate(self, interaction: discord.Interaction, model: str, version: int) -> None:
        """Make a model version the one that serves."""
        row = await self.bot.service.versions.activate(model, version)
        await interaction.response.send_message(f"{row.model} v{row.version} is now active.", ephemeral=True)

    @app_commands.command(name="rollback")
    async def rollback(self, interaction: discord.Interaction, model: str) -> None:
        """Go back to the version the active one replaced."""
        row = await self.bot.service.versions.rollback(model)
        await interaction.response.send_message(f"{row.model} rolled back to v{row.version}.", ephemeral=True)

    @app_commands.command(name="quota-user")
    async def quota_user(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        chars_per_day: app_commands.Range[int, 0] | None = None,
        concurrent: app_commands.Range[int, 0] | None = None,
        cooldown_s: app_commands.Range[float, 0.0] | None = None,
    ) -> None:
        """Set a user's quota in every server (owners; 0 = no limit; left out = the default)."""
        row = await self.bot.service.quotas.set_quota(
            "user", str(user.id), chars_per_day=chars_per_day, concurrent=concurrent, cooldown_s=cooldown_s
        )
        await interaction.response.send_message(f"Quota of {user.mention}: {_limits(row)}", ephemeral=True)

    @app_commands.command(name="quota-member", extras=SERVER_ADMIN)
    async def quota_member(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        chars_per_day: app_commands.Range[int, 0] | None = None,
        concurrent: app_commands.Range[int, 0] | None = None,
        cooldown_s: app_commands.Range[float, 0.0] | None = None,
    ) -> None:
        """Limit a member in this server only, within the global limits (0 or left out = no extra limit)."""
        guild_id = _guild_id(interaction)
        row = await self.bot.service.quotas.set_quota(
            "user",
            member_subject_id(guild_id, user.id),
            chars_per_day=chars_per_day,
            concurrent=concurrent,
            cooldown_s=cooldown_s,
        )
        await interaction.response.send_message(
            f"Quota of {user.mention} in this server: {_limits(row)}", ephemeral=True
        )

    @app_commands.command(name="quota-guild")
    async def quota_guild(
        self,
        interaction: discord.Interaction,
        chars_per_day: app_commands.Range[int, 0] | None = None,
        concurrent: app_commands.Range[int, 0] | None = None,
        server: str | None = None,
    ) -> None:
        """Set a server's quota (owners; 0 = no limit; left out = the default).

        Args:
            chars_per_day: characters the whole server may generate per UTC day
            concurrent: generations running at once in the server
            server: the server's id (default: this one)
        """
        guild_id = _guild_id(interaction) if server is None else _snowflake(server)
        row = await self.bot.service.quotas.set_quota(
            "guild", str(guild_id), chars_per_day=chars_per_day, concurrent=concurrent
        )
        await interaction.response.send_message(f"Quota of server {guild_id}: {_limits(row)}", ephemeral=True)

    @app_commands.command(name="cancel")
    async def cancel(self, interaction: discord.Interaction, job: int) -> None:
        """Cancel a queued or running job."""
        row = await self.bot.service.jobs.cancel(job)
        await interaction.response.send_message(f"Job #{row.id}: {row.status} (cancel requested).", ephemeral=True)


def _guild_id(interaction: discord.Interaction) -> int:
    """The server an interaction comes from (the group is guild-only; a DM is refused anyway)."""
    if interaction.guild_id is None:
        raise GenbotError("this command only works in a server")
    return interaction.guild_id


def _snowflake(text: str) -> int:
    """A Discord id typed as text (options cannot hold 64-bit integers safely)."""
    if not text.strip().isdigit():
        raise InvalidRequest(f"not a server id: {text!r}")
    return int(text.strip())


def _limits(row: object) -> str:
    """A quota row as text; None = default, 0 = no limit."""
    names = ("chars_per_day", "concurrent", "cooldown_s")
    return ", ".join(f"{n} {getattr(row, n) if getattr(row, n) is not None else 'default'}" for n in names)


def _check_attachment(file: discord.Attachment, max_bytes: int) -> None:
    """A corpus upload must be a .txt text file within the size limit (CorpusError otherwise)."""
    if not file.filename.lower().endswith(".txt"):
        raise CorpusError(f"{file.filename}: only .txt files can become corpora")
    if file.content_type and not file.content_type.startswith("text/"):
        raise CorpusError(f"{file.filename}: not a text file ({file.content_type})")
    if file.size > max_bytes:
        raise CorpusError(f"{file.filename}: {file.size:,} bytes; the limit is {max_bytes:,}")

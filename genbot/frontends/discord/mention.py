"""The mention trigger: '@genbot some prompt' in a channel streams a reply there."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from genbot.errors import GenbotError
from genbot.frontends.discord.commands import capped_length, footer_for, subjects_of
from genbot.frontends.discord.streaming import ChannelPages, StreamingReply
from genbot.frontends.discord.views import FollowUpView, StopView
from genbot.service import GenerationRequest, Requester

if TYPE_CHECKING:
    from genbot.frontends.discord.host import BotHost

_MENTION = re.compile(r"<@!?\d+>")


async def answer_mention(bot: BotHost, message: discord.Message) -> None:
    """Generate from the message's text (mentions removed) with the configured model."""
    prompt = _MENTION.sub("", message.content).strip()
    models = bot.loaded_models()
    model = bot.settings.mention_model or (models[0] if models else "")
    guild_id = message.guild.id if message.guild else None
    try:
        subjects = subjects_of(bot, message.author.id, guild_id)
        admission = await bot.service.quotas.admit(subjects, chars=bot.service.settings.sampling.length)
    except GenbotError as e:
        await message.reply(str(e)[:2000])
        return
    try:
        request = GenerationRequest(
            model=model,
            prompt=prompt,
            length=capped_length(None, admission.remaining_chars, bot.service.settings.sampling.length),
            requester=Requester(
                frontend="discord",
                user_id=str(message.author.id),
                guild_id=str(guild_id) if guild_id else None,
                channel_id=str(message.channel.id),
            ),
        )
        generation = await bot.service.generate(request)
    except GenbotError as e:
        await admission.finish(0)
        await message.reply(str(e)[:2000])
        return
    view = StopView(generation, message.author.id, lambda _: False)
    lang = generation.entry.card.sampling.code_fence if generation.entry.card else None
    reply = StreamingReply(
        ChannelPages(message), prefix=prompt, lang=lang or None, interval=bot.settings.edit_interval_s, view=view,
        final_view=FollowUpView(generation.id),
    )  # fmt: skip
    try:
        await reply.run(generation, lambda result: footer_for(generation, result))
    finally:
        view.stop()
        await admission.finish(len(generation.stream.output))

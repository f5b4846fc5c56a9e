"""Streaming a generation into Discord messages, within Discord's limits.

Characters are coalesced and written by editing the reply at most once per ``interval``
(Discord asks for about one edit per second per message; discord.py follows any 429 it still
gets). The next edit is timed from the end of the previous one, so two edits of a message
never *arrive* closer together than ``interval`` even when one request is slow. Text past
Discord's 2000 characters continues in follow-up messages, split at line boundaries; models
whose card asks for a code fence get one on every page (its length counts towards the limit).
While it streams, the Stop button sits under the first page, where the reply starts; the finished
reply's buttons (Continue, Again) sit under the last page, where a reader finishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import discord

from genbot.service import Generation, GenerationResult

MESSAGE_LIMIT = 2000  # Discord's limit on a message's content
FOOTER_ROOM = 160  # kept free on every page so the final footer always fits
EMPTY = "…"  # Discord refuses empty content; shown before the first characters arrive
ZWSP = "\u200b"


class PageSink(Protocol):
    """Where pages go: page 0 is the reply itself, later pages are follow-up messages."""

    async def write(self, index: int, content: str, view: discord.ui.View | None) -> None:
        """Create page ``index`` (if new) or edit it to ``content`` with ``view``'s buttons (None: none)."""
        ...


def code_fence(lang: str | None) -> tuple[str, str]:
    """The opening and closing fence for ``lang`` (no fence for None or "")."""
    return (f"```{lang}\n", "\n```") if lang else ("", "")


def page_budget(lang: str | None) -> int:
    """Characters of text one page holds, leaving room for the fence and the footer."""
    opening, closing = code_fence(lang)
    return MESSAGE_LIMIT - FOOTER_ROOM - len(opening) - len(closing)


def paginate(text: str, budget: int) -> list[str]:
    """Split ``text`` into pages of at most ``budget`` chars, at the last newline where there is one.

    Greedy from the start, so a page never changes once the text has grown past it.
    """
    pages: list[str] = []
    while len(text) > budget:
        cut = text.rfind("\n", 0, budget)
        cut = budget if cut <= 0 else cut + 1  # keep the newline with the page it ends
        pages.append(text[:cut])
        text = text[cut:]
    pages.append(text)
    return pages


def render(page: str, lang: str | None, footer: str = "") -> str:
    """A page as message content: fenced if asked, footer below, never empty."""
    opening, closing = code_fence(lang)
    # A fence in the output would end ours early; a zero-width space keeps it literal.
    body = f"{opening}{page.replace('```', '``' + ZWSP + '`')}{closing}" if lang else (page or EMPTY)
    content = f"{body}\n{footer[: FOOTER_ROOM - 1]}" if footer else body
    return content[:MESSAGE_LIMIT]


class StreamingReply:
    """Renders one generation into a ``PageSink``, pacing edits and finishing with a footer."""

    def __init__(
        self,
        sink: PageSink,
        *,
        prefix: str,
        lang: str | None,
        interval: float,
        view: discord.ui.View | None = None,
        final_view: discord.ui.View | None = None,
    ) -> None:
        self.sink = sink
        self.final_view = final_view  # replaces ``view`` on the finished reply (None: no buttons left)
        self.prefix = prefix  # the prompt, shown before the generated text
        self.lang = lang
        self.interval = interval
        self.view = view
        self._shown: list[tuple[str, discord.ui.View | None]] = []  # content and view last written to each page

    async def run(self, generation: Generation, footer: Callable[[GenerationResult], str]) -> GenerationResult:
        """Stream until the generation ends, then write the final pages with the footer."""
        chunks: list[str] = []
        reader = asyncio.create_task(_collect(generation, chunks))
        next_edit = time.monotonic() + self.interval
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=max(0.0, next_edit - time.monotonic()))
                if reader.done():
                    break
                await self._flush("".join(chunks))
                next_edit = time.monotonic() + self.interval  # from the end of the edit: see module doc
        finally:
            if not reader.done():
                generation.cancel()  # this front end is going away (shutdown, a failed edit)
            await asyncio.gather(reader, return_exceptions=True)
        result = await generation.result()
        await asyncio.sleep(max(0.0, next_edit - time.monotonic()))
        await self._flush(result.output, footer(result), final=True)
        return result

    async def _flush(self, output: str, footer: str = "", *, final: bool = False) -> None:
        """Write every page whose content or buttons changed (at the end: Stop leaves page 0)."""
        pages = paginate(self.prefix + output, page_budget(self.lang))
        for index, page in enumerate(pages):
            last = index == len(pages) - 1
            shown = (render(page, self.lang, footer if last else ""), self._view_for(index, last, final))
            if index < len(self._shown) and self._shown[index][0] == shown[0] and self._shown[index][1] is shown[1]:
                continue
            await self.sink.write(index, *shown)
            if index < len(self._shown):
                self._shown[index] = shown
            else:
                self._shown.append(shown)

    def _view_for(self, index: int, last: bool, final: bool) -> discord.ui.View | None:
        """Stop under the first page while streaming; the finished reply's buttons under the last page."""
        if final:
            return self.final_view if last else None
        return self.view if index == 0 else None


async def _collect(generation: Generation, chunks: list[str]) -> None:
    """Append the generation's chunks as they arrive."""
    async for chunk in generation:
        chunks.append(chunk)


class InteractionPages:
    """Pages of an interaction reply: page 0 is the (deferred) original response, then follow-ups."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self._followups: list[discord.WebhookMessage] = []

    async def write(self, index: int, content: str, view: discord.ui.View | None) -> None:
        """Edit the original response or a follow-up; send the follow-up the first time."""
        if index == 0:
            await self.interaction.edit_original_response(content=content, view=view)
        elif index - 1 < len(self._followups):
            await self._followups[index - 1].edit(content=content, view=view)
        elif view is None:
            self._followups.append(await self.interaction.followup.send(content, wait=True))
        else:
            self._followups.append(await self.interaction.followup.send(content, view=view, wait=True))


class ChannelPages:
    """Pages of a reply to a message (the mention trigger): channel messages the bot edits."""

    def __init__(self, reply_to: discord.Message) -> None:
        self.reply_to = reply_to
        self._messages: list[discord.Message] = []

    async def write(self, index: int, content: str, view: discord.ui.View | None) -> None:
        """Send the page the first time (page 0 as a reply), edit it afterwards."""
        if index < len(self._messages):
            await self._messages[index].edit(content=content, view=view)
        elif index == 0 and view is not None:
            self._messages.append(await self.reply_to.reply(content, view=view))
        elif index == 0:
            self._messages.append(await self.reply_to.reply(content))
        elif view is not None:
            self._messages.append(await self.reply_to.channel.send(content, view=view))
        else:
            self._messages.append(await self.reply_to.channel.send(content))

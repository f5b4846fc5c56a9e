"""Continuations and threads: who may continue a stored generation, what it reads, its chain.

A continuation reads the tail of its parent's prompt + output (plus any text the caller adds),
at most ``[sampling] context_chars`` characters, and that context is stored as its own prompt
with ``parent_id`` pointing at the parent. So the row says exactly what the model read, and the
same context with the same seed gives the same text again — whether by continuing the parent
once more or by sampling the stored prompt with the stored seed.

Whose generations: the same identity history uses. An API key sees the rows made with that key,
a Discord user their own Discord rows, the local user (REPL, CLI) their local rows; an admin sees
every row. Any other row is refused exactly like an id that does not exist, so its text never leaks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from genbot.errors import InvalidRequest, NotFound
from genbot.presets.rules import PresetOwner
from genbot.storage import repository
from genbot.storage.db import Database
from genbot.storage.repository import GenerationRow
from genbot.storage.tables import GenerationStatus

LOCAL_FRONTENDS = ("repl", "cli")  # one local user, whichever terminal command made the row
MAX_ID = 2**62  # ids beyond this are refused as unknown (SQLite and PostgreSQL integers are 64-bit)
MAX_THREAD = 500  # rows one thread listing walks, up and down (a thread is a person's chain, not a log)


@dataclass(frozen=True)
class Identity:
    """Who asks, as far as owning generations and presets goes."""

    frontend: str
    user_id: str | None = None
    api_key_id: str | None = None
    admin: bool = False

    def owns(self, row: GenerationRow) -> bool:
        """Whether this caller may see and continue ``row``."""
        if self.admin:
            return True
        if self.frontend == "api":
            return self.api_key_id is not None and row.api_key_id == self.api_key_id
        if self.frontend in LOCAL_FRONTENDS:
            return self.user_id is not None and row.frontend in LOCAL_FRONTENDS and row.user_id == self.user_id
        return self.user_id is not None and row.frontend == self.frontend and row.user_id == self.user_id

    @property
    def preset_owner(self) -> PresetOwner:
        """Whose presets this caller saves and loads."""
        if self.frontend == "api":
            return PresetOwner("api", self.api_key_id or "anonymous")
        frontend = "local" if self.frontend in LOCAL_FRONTENDS else self.frontend
        return PresetOwner(frontend, self.user_id or "anonymous")


async def owned(db: Database, gen_id: int, who: Identity) -> GenerationRow:
    """The generation ``gen_id`` if ``who`` may see it; NotFound (the same as for no such id) otherwise."""
    row = None
    if 1 <= gen_id <= MAX_ID:  # larger ids exist nowhere, and some databases cannot even compare them
        with contextlib.suppress(NotFound):
            row = await repository.get_generation(db, gen_id)
    if row is None or not who.owns(row):
        raise NotFound(f"no generation with id {gen_id}")
    return row


def context(parent: GenerationRow, extra: str, limit: int) -> str:
    """What a continuation of ``parent`` reads: the last ``limit`` characters of prompt + output + ``extra``."""
    if parent.status == GenerationStatus.RUNNING:
        raise InvalidRequest(f"generation {parent.id} is still running: continue it once it has finished")
    text = parent.prompt + parent.output + extra
    return text[-limit:] if limit > 0 else ""


async def thread(db: Database, gen_id: int, who: Identity) -> list[GenerationRow]:
    """The chain through ``gen_id``: its ancestors, itself and every continuation below it, oldest first.

    Rows ``who`` may not see are left out (an admin sees all); ``gen_id`` itself must be theirs.
    """
    start = await owned(db, gen_id, who)
    chain = [start]
    seen = {start.id}
    parent_id = start.parent_id
    while parent_id is not None and parent_id not in seen and len(seen) < MAX_THREAD:
        try:
            parent = await repository.get_generation(db, parent_id)
        except NotFound:
            break  # the parent was forgotten: the link was cleared, or is being
        seen.add(parent.id)
        chain.append(parent)
        parent_id = parent.parent_id
    level = [start.id]
    below: list[GenerationRow] = []
    while level and len(seen) < MAX_THREAD:
        children = [row for row in await repository.children_of(db, level) if row.id not in seen]
        seen.update(row.id for row in children)
        below.extend(children)
        level = [row.id for row in children]
    rows = sorted(chain + below, key=lambda row: row.id)
    return [row for row in rows if who.owns(row)][:MAX_THREAD]

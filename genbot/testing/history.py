"""A large synthetic history for tests and benchmarks of search: seeded, so every run is the same.

Outputs are made of pseudo-words drawn with a Zipf-like skew (a few very common, most rare), as
in real text, from letters that cannot spell an English word a test plants (no ``l``, ``v``,
``j``, ``h``, ``c``, ``o``, ``w``, ``y``): ``plant`` adds rows with known words to look for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from genbot.storage.db import Database
from genbot.storage.tables import Generation

START = datetime(2026, 1, 1, tzinfo=UTC)
_CONSONANTS = "bdfgkmnprst"
_VOWELS = "aeiu"


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """``size`` distinct pseudo-words of two to four syllables."""
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.randint(2, 4)
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables)))
    return sorted(words)


def synthetic_rows(n: int, *, seed: int = 0, users: int = 100, words: int = 5000) -> list[dict[str, Any]]:
    """``n`` finished generations as column values: users ``u0``…, one a minute from ``START``."""
    rng = random.Random(seed)
    vocab = vocabulary(words, rng)
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    rows = []
    for i in range(n):
        output = " ".join(rng.choices(vocab, weights, k=rng.randint(20, 60)))
        prompt = " ".join(rng.choices(vocab, weights, k=rng.randint(1, 3))).upper() + ":"
        rows.append(_row(i, prompt, output, f"u{i % users}"))
    return rows


def plant(rows: list[dict[str, Any]], texts: Sequence[tuple[str, str, str]]) -> list[int]:
    """Append rows of (user, prompt, output); their future ids, if inserted into an empty table."""
    first = len(rows)
    for user, prompt, output in texts:
        rows.append(_row(len(rows), prompt, output, user))
    return list(range(first + 1, len(rows) + 1))


def _row(i: int, prompt: str, output: str, user: str) -> dict[str, Any]:
    at = START + timedelta(minutes=i)
    return {
        "created_at": at, "finished_at": at + timedelta(seconds=2), "model": "shakespeare", "model_version": "1",
        "prompt": prompt, "output": output, "temperature": 0.8, "max_length": 400, "seed": i, "stop": [],
        "chars": len(output), "status": "completed", "frontend": "cli", "user_id": user,
    }  # fmt: skip


async def bulk_insert(db: Database, rows: list[dict[str, Any]], batch: int = 5000) -> None:
    """Insert the rows in one transaction (executemany, in batches to bound memory per statement)."""
    async with db.write() as session:
        for start in range(0, len(rows), batch):
            await session.execute(insert(Generation), rows[start : start + batch])

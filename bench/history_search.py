"""History search: full-text queries over 100k stored generations, p50 / p95 per database.

What it measures: a fresh SQLite file (and, with ``--postgres URL`` or GENBOT_BENCH_POSTGRES_URL,
a fresh database on that PostgreSQL server) migrated to head and filled with 100,000 synthetic
generations (``genbot.testing.history``: 20–60 pseudo-words each, a Zipf-like word skew, 100
users); then each kind of search, ``repository.list_generations(query=…, limit=20)`` as
``GET /v1/generations?q=`` and ``genbot history -q`` run it, timed from the call to the rows
(best match first), repeated. Kinds: a rare, a middling and the most common word for one user,
two words, a phrase, an OR, and a middling and the most common word over everyone's rows (an
admin's view). A search ranks at most its newest ``RANK_WINDOW`` matches (2,000): the common
words are ranked within that window, the others rank every match. The goal: a search answers
in under 50 ms.

    python bench/history_search.py [--rows 100000] [--repeats 30] [--postgres URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

from genbot.storage.search import RANK_WINDOW
from genbot.testing.databases import fresh_postgres_database

NAME = "history_search"
TARGET_MS = 50.0


def searches(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The searches timed: a label → the filters (words picked from the stored text by frequency)."""
    from collections import Counter

    counts = Counter(word for row in rows[:5000] for word in row["output"].split())
    ranked = [word for word, _ in counts.most_common()]
    common, middling, rare = ranked[0], ranked[min(100, len(ranked) - 1)], ranked[min(2000, len(ranked) - 1)]
    return {
        "rare word, one user": {"query": rare, "user_id": "u7"},
        "middling word, one user": {"query": middling, "user_id": "u7"},
        "most common word, one user": {"query": common, "user_id": "u7"},
        "two words (AND), one user": {"query": f"{middling} {ranked[50]}", "user_id": "u7"},
        "phrase, one user": {"query": f'"{common} {ranked[1]}"', "user_id": "u7"},
        "OR of two words, one user": {"query": f"{rare} OR {ranked[1500]}", "user_id": "u7"},
        "middling word, everyone (admin)": {"query": middling},
        "most common word, everyone (admin)": {"query": common},
    }


async def measure(url: str, n: int, repeats: int) -> dict[str, list[float]]:
    """Fill a fresh database and time each search ``repeats`` times; ms per call by label."""
    from genbot.storage.db import Database
    from genbot.storage.migrate import upgrade_database
    from genbot.storage.repository import list_generations
    from genbot.testing.history import bulk_insert, synthetic_rows

    await upgrade_database(url)
    rows = synthetic_rows(n, seed=1)
    async with Database.open(url) as db:
        started = time.perf_counter()
        await bulk_insert(db, rows)
        bl.say(f"  {n:,} rows inserted in {time.perf_counter() - started:.1f} s")
        if not db.is_sqlite:
            async with db.engine.begin() as conn:
                from sqlalchemy import text

                await conn.execute(text("ANALYZE generations"))
        plan = searches(rows)
        times: dict[str, list[float]] = {label: [] for label in plan}
        order = [label for label in plan for _ in range(repeats)]
        random.Random(0).shuffle(order)  # interleaved, so a slow moment of the machine hits every kind
        for label in plan:  # one warm-up call each
            await list_generations(db, limit=20, **plan[label])
        for label in order:
            started = time.perf_counter()
            await list_generations(db, limit=20, **plan[label])
            times[label].append((time.perf_counter() - started) * 1e3)
    return times


def rows_for(db_name: str, times: dict[str, list[float]]) -> list[bl.Row]:
    out = []
    for label, values in times.items():
        out.append(bl.Row(f"{db_name}: {label}, p50", bl.percentile(values, 50), None, "ms"))
        out.append(bl.Row(f"{db_name}: {label}, p95", bl.percentile(values, 95), None, "ms", "value<=", TARGET_MS))
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="generations stored before searching")
    p.add_argument("--repeats", type=int, default=30, help="calls per kind of search")
    p.add_argument("--postgres", default=os.environ.get("GENBOT_BENCH_POSTGRES_URL"), help="PostgreSQL server URL")
    p.add_argument("--quick", action="store_true", help="smoke test: 10,000 rows, 5 calls each")
    a = p.parse_args()
    if a.quick:
        a.rows, a.repeats = 10_000, 5
    return a


def main() -> None:
    a = parse_args()
    notes = [n for n in (bl.load_warning(1),) if n]
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="genbot-bench-history-") as tmp:
        from genbot.storage.db import default_sqlite_url

        bl.say("SQLite …")
        results["sqlite"] = asyncio.run(measure(default_sqlite_url(Path(tmp)), a.rows, a.repeats))
    if a.postgres:
        bl.say("PostgreSQL …")
        with fresh_postgres_database(a.postgres, prefix="genbot_bench") as url:
            results["postgresql"] = asyncio.run(measure(url, a.rows, a.repeats))
    else:
        notes.append("PostgreSQL not measured: pass --postgres URL (or set GENBOT_BENCH_POSTGRES_URL)")
    if a.quick:
        notes.append("--quick: 10,000 rows, 5 calls each; smoke test only")
    rows = [row for name, times in results.items() for row in rows_for(name, times)]
    payload = {
        "rows_stored": a.rows,
        "repeats": a.repeats,
        "rank_window": RANK_WINDOW,
        "times_ms": {db: {k: [round(v, 2) for v in vs] for k, vs in t.items()} for db, t in results.items()},
        "env": bl.environment(1),
    }
    bl.report(NAME, rows, payload, notes)


if __name__ == "__main__":
    main()

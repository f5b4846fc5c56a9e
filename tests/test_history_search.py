"""Full-text search of stored generations, on a real SQLite file and (when configured) PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from genbot.errors import InvalidRequest
from genbot.storage.db import Database
from genbot.storage.migrate import alembic_config, current_revision, upgrade_database
from genbot.storage.repository import (
    NewGeneration,
    finish_generation,
    forget_user,
    list_generations,
    start_generation,
    update_progress,
)
from genbot.storage.search import RANK_WINDOW, fts5_expression, owner_token, parse_query
from genbot.testing.history import bulk_insert, plant, synthetic_rows

HOSTILE = [
    '"',
    '"unbalanced',
    "NEAR(love hate",
    "love*",
    "*",
    "prompt:love",
    "((((love",
    ")",
    "love\x00hate",
    "'; DROP TABLE generations; --",
    "love AND",
    "OR love",
    "NOT NOT love",
    "-",
    "^love",
    "{prompt output}: love",
    "love" + " x" * 31,
]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An open database migrated to head."""
    await upgrade_database(db_url)
    async with Database.open(db_url) as database:
        yield database


async def store(db: Database, prompt: str, output: str, *, user: str | None = "u1", **fields: Any) -> int:
    """A finished generation with this prompt and output."""
    record = NewGeneration(model="shakespeare", prompt=prompt, temperature=0.8, max_length=200, frontend="cli")
    record = NewGeneration(**(record.__dict__ | {"user_id": user} | fields))
    gen_id = await start_generation(db, record)
    await finish_generation(db, gen_id, output, "completed", len(output), 1.0, 2.0)
    return gen_id


async def found(db: Database, query: str, **filters: Any) -> list[int]:
    return [row.id for row in await list_generations(db, query=query, **filters)]


async def test_words_phrases_or_and_not(db: Database) -> None:
    romeo = await store(db, "ROMEO:", "O my love, good night, sweet dreams")
    juliet = await store(db, "JULIET:", "my love is deep; parting is such sweet sorrow")
    hate = await store(db, "ROMEO:", "here's much to do with hate, but more with love")
    await store(db, "MERCUTIO:", "a plague o' both your houses")
    assert sorted(await found(db, "ROMEO AND love")) == sorted([romeo, hate])
    assert sorted(await found(db, "romeo love")) == sorted([romeo, hate])  # case does not matter
    assert sorted(await found(db, "love -hate")) == sorted([romeo, juliet])
    assert sorted(await found(db, "love NOT hate")) == sorted([romeo, juliet])
    assert await found(db, '"good night"') == [romeo]
    assert await found(db, '"night good"') == []
    assert sorted(await found(db, "sorrow OR hate")) == sorted([juliet, hate])
    assert sorted(await found(db, "ROMEO sorrow OR hate")) == [hate]  # ROMEO and (sorrow or hate)
    assert await found(db, "plagues") != []  # word forms: the stemmer finds "plague"


async def test_results_are_ranked_best_match_first(db: Database) -> None:
    once = await store(db, "a", "love and other words that are not the one we look for at all today")
    many = await store(db, "love", "love love love")
    await store(db, "b", "nothing to see")
    assert await found(db, "love") == [many, once]


async def test_search_is_scoped_and_combines_with_filters(db: Database) -> None:
    mine = await store(db, "ROMEO:", "love", user="u1")
    await store(db, "ROMEO:", "love", user="u2")
    other_model = await store(db, "ROMEO:", "love", user="u1", model="linux")
    assert await found(db, "love", user_id="u1", model="shakespeare") == [mine]
    assert sorted(await found(db, "love", user_id="u1")) == sorted([mine, other_model])
    assert len(await found(db, "love")) == 3  # an admin's view: everyone's rows
    assert len(await found(db, "love", limit=1)) == 1


async def test_index_follows_updates_and_deletes(db: Database) -> None:
    record = NewGeneration(model="m", prompt="ROMEO:", temperature=0.8, max_length=200, frontend="api", user_id="u1")
    gen_id = await start_generation(db, record)
    assert await found(db, "balcony") == []
    await update_progress(db, gen_id, "the balcony", 11)
    assert await found(db, "balcony") == [gen_id]  # a running row is found by its output so far
    await finish_generation(db, gen_id, "the orchard wall", "completed", 16, 1.0, 2.0)
    assert await found(db, "balcony") == []  # the old text left the index
    assert await found(db, "orchard") == [gen_id]
    await forget_user(db, "u1")
    assert await found(db, "orchard") == []


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_queries_are_searched_safely_or_refused_clearly(db: Database, query: str) -> None:
    love = await store(db, "prompt", "love and hate")
    try:
        rows = await found(db, query)
    except InvalidRequest as e:
        assert "search" in str(e)
    else:
        assert rows in ([], [love])


async def test_a_query_without_words_or_too_long_is_refused(db: Database) -> None:
    for query in ["", "   ", "***", "-love", '""', "x" * 501]:
        with pytest.raises(InvalidRequest, match="search"):
            await found(db, query)


def test_every_word_reaches_fts5_quoted() -> None:
    expression = fts5_expression(parse_query('ROMEO AND "good night" OR NEAR(x -hate prompt:*'))
    # "NEAR(x" is one token whose words must stand together: a phrase, not FTS5's NEAR operator.
    assert expression == '((("romeo") AND ("good night" OR "near x") AND ("prompt")) NOT "hate")'


async def test_existing_rows_are_indexed_by_the_upgrade_and_downgrade_drops_the_index(db_url: str) -> None:
    await upgrade_database(db_url, "0007")
    async with Database.open(db_url, upgrade=False) as db, db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO generations (created_at, model, prompt, output, temperature, max_length, stop, chars,"
                " status, frontend) VALUES ('2026-11-01 00:00:00', 'm', 'ROMEO:', 'the orchard wall', 0.8, 10,"
                " '[]', 16, 'completed', 'cli')"
            )
        )
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        assert len(await found(db, "orchard")) == 1
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0007")
    async with Database.open(db_url, upgrade=False) as db:
        assert await current_revision(db.engine) == "0007"
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            columns = await conn.run_sync(lambda sync: [c["name"] for c in inspect(sync).get_columns("generations")])
    assert not [t for t in tables if t.startswith("generations_fts") or t == "maintenance_runs"]
    assert "search" not in columns


def test_owner_tokens_narrow_the_fts5_search_and_words_that_could_be_one_skip_that_column() -> None:
    owners = [owner_token("u", "a b"), owner_token("k", "key1")]
    expression = fts5_expression(parse_query("x0 love -café"), owners)
    assert expression == (
        '(owner : "k6b6579310" AND (owner : "u6120620" AND'
        ' ((({prompt output} : "x0") AND ("love")) NOT {prompt output} : "café")))'
    )


ODD_USERS = ["a b", "a-b", "a", "ü@例.jp", "", "12345678901234567890", "x" * 64]


async def test_a_users_search_finds_only_their_rows_whatever_their_id_looks_like(db: Database) -> None:
    rows = {user: await store(db, "ROMEO:", f"love and more love for {len(user)}", user=user) for user in ODD_USERS}
    nobody = await store(db, "ROMEO:", "love", user=None)
    for user, gen_id in rows.items():
        assert await found(db, "love", user_id=user) == [gen_id]
        # The owner's token, typed as a search word, is looked for in the text only.
        assert await found(db, owner_token("u", user), user_id=user) == []
    assert sorted(await found(db, "love")) == sorted([*rows.values(), nobody])


async def test_an_api_keys_search_finds_only_rows_made_with_that_key(db: Database) -> None:
    mine = await store(db, "p", "orchard wall", user=None, api_key_id="key-1")
    theirs = await store(db, "p", "orchard wall", user=None, api_key_id="key-10")
    both = await store(db, "p", "orchard wall", user="u1", api_key_id="key-1")
    assert sorted(await found(db, "orchard", api_key_id="key-1")) == sorted([mine, both])
    assert await found(db, "orchard", api_key_id="key-10") == [theirs]
    assert await found(db, "orchard", api_key_id="key-1", user_id="u1") == [both]
    assert await found(db, "orchard", api_key_id="key-2") == []


async def test_upgrade_to_0010_indexes_the_owners_of_stored_rows_and_downgrade_keeps_search(db_url: str) -> None:
    await upgrade_database(db_url, "0009")
    insert = text(
        "INSERT INTO generations (created_at, model, prompt, output, temperature, max_length, stop, chars,"
        " status, frontend, user_id) VALUES ('2026-11-01 00:00:00', 'm', 'ROMEO:', :output, 0.8, 10,"
        " '[]', 16, 'completed', 'cli', :user)"
    )
    async with Database.open(db_url, upgrade=False) as db, db.engine.begin() as conn:
        for user in ("u1", "u2", "u2"):
            await conn.execute(insert, {"output": f"the orchard wall of {user}", "user": user})
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        assert len(await found(db, "orchard", user_id="u1")) == 1
        assert len(await found(db, "orchard", user_id="u2")) == 2
        assert await found(db, "orchard", user_id="u3") == []
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0009")
    async with Database.open(db_url, upgrade=False) as db:
        assert await current_revision(db.engine) == "0009"
        if db.is_sqlite:  # revision 0009's index is back, and its triggers keep it up to date
            async with db.engine.begin() as conn:
                await conn.execute(insert, {"output": "an orchard again", "user": "u3"})
                match = "SELECT count(*) FROM generations_fts WHERE generations_fts MATCH 'orchard'"
                assert await conn.scalar(text(match)) == 4
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        assert len(await found(db, "orchard", user_id="u3")) == int(db.is_sqlite)


async def test_a_common_word_ranks_its_newest_matches_and_pages_on_to_every_older_one(db: Database) -> None:
    texts = [("u1", "ROMEO:", "love, love and love again")]  # the best match of all, and the oldest
    texts += [("u2", "JULIET:", "love and nothing more for now")]  # the other user's, also old
    texts += [("u1", "NURSE:", f"words number {i} said once with love at the end") for i in range(RANK_WINDOW + 300)]
    texts += [("u1", "ROMEO:", "love love and more love")]  # the best of the newest
    rows: list[dict[str, Any]] = []
    old_best, others, *weak, new_best = plant(rows, texts)
    await bulk_insert(db, rows)
    first = await found(db, "love", user_id="u1", limit=20)
    assert first[0] == new_best and old_best not in first  # ranked among the newest matches only
    pages = [await found(db, "love", user_id="u1", limit=700, offset=offset) for offset in range(0, 3000, 700)]
    every = [gen_id for page in pages for gen_id in page]
    assert sorted(every) == sorted([old_best, *weak, new_best])  # each match once, nothing lost
    assert every[RANK_WINDOW:] == sorted(every[RANK_WINDOW:], reverse=True)  # past the window: newest first
    assert every[-1] == old_best
    # The window holds the user's own newest matches, however many newer rows others have.
    assert await found(db, "love", user_id="u2") == [others]
    assert await found(db, "love", user_id="u1", search="ROMEO") == [new_best, old_best]


@pytest.mark.slow
async def test_a_large_history_search_returns_the_right_rows_ranked(db: Database) -> None:
    # Ten times the ranking window: common words match far more rows than are ranked. The speed
    # at 100,000 rows is bench/history_search.py's to measure.
    rows = synthetic_rows(10 * RANK_WINDOW, seed=1)
    strong, weak, phrase, others = plant(
        rows,
        [
            ("u1", "ROMEO:", "love, love and love again; ROMEO loves"),
            ("u1", "JULIET:", "a long answer where ROMEO appears once and love once among many other words here"),
            ("u1", "NURSE:", "good night, good night! parting is such sweet sorrow"),
            ("u2", "ROMEO:", "love love love love"),
        ],
    )
    await bulk_insert(db, rows)
    assert await found(db, "ROMEO AND love", user_id="u1") == [strong, weak]
    everyone = await found(db, "ROMEO AND love")  # an admin's view
    assert sorted(everyone) == sorted([strong, weak, others]) and everyone[-1] == weak
    assert await found(db, '"sweet sorrow"', user_id="u1") == [phrase]
    assert await found(db, "sorrow -night") == []
    u0_words = Counter(word for row in rows if row["user_id"] == "u0" for word in set(row["output"].split()))
    common = await list_generations(db, query=u0_words.most_common(1)[0][0], user_id="u0", limit=20)
    assert len(common) == 20 and all(row.user_id == "u0" for row in common)

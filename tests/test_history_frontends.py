"""Searching the history through the HTTP API (real uvicorn) and Discord (the fake Discord)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbot.service import GenbotService
from genbot.storage.repository import NewGeneration, finish_generation, start_generation
from genbot.testing.fake_discord import FakeDiscord
from tests.helpers import api_server, client, ephemeral_text, opened_service, opt, running_bot

ALICE = "300000000000000001"  # the fake's default member
HOSTILE_QUERIES = ['"', "NEAR(", "love*", "prompt:love", "((love", ")", "'; DROP TABLE generations; --", "-"]


async def store(service: GenbotService, prompt: str, output: str, **owner: str) -> int:
    assert service.db is not None
    record = NewGeneration(model="alpha", prompt=prompt, temperature=0.8, max_length=50, frontend="api", **owner)
    gen_id = await start_generation(service.db, record)
    await finish_generation(service.db, gen_id, output, "completed", len(output), 1.0, 2.0)
    return gen_id


async def test_api_search_is_ranked_scoped_and_safe(plugins_dir: Path) -> None:
    async with api_server() as (url, service), client(url) as c:
        once = await store(service, "ROMEO:", "a word of love in a long line of other words", api_key_id="anonymous")
        often = await store(service, "ROMEO:", "love, love, love", api_key_id="anonymous")
        await store(service, "ROMEO:", "hate", api_key_id="anonymous")
        await store(service, "ROMEO:", "love love love love", api_key_id="7")  # another key's row
        found = await c.get("/v1/generations", params={"q": "ROMEO AND love"})
        phrase = await c.get("/v1/generations", params={"q": '"word of love"'})
        hostile = [await c.get("/v1/generations", params={"q": q}) for q in HOSTILE_QUERIES]
        long = await c.get("/v1/generations", params={"q": "love " * 2000})
        nul = await c.get("/v1/generations", params={"q": "love\x00"})
    assert [g["id"] for g in found.json()["generations"]] == [often, once]
    assert [g["id"] for g in phrase.json()["generations"]] == [once]
    for response in hostile:
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert "search" in response.json()["error"]["message"]
    assert long.status_code == 400 and "at most 500 characters" in long.json()["error"]["message"]
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]  # as for every text field


@pytest.fixture
def fast_versions(monkeypatch: pytest.MonkeyPatch, plugins_dir: Path) -> None:
    monkeypatch.setenv("GENBOT_VERSIONS__POLL_SECONDS", "0.3")


async def test_discord_history_query_shows_only_your_matches(fast_versions: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        await store(service, "ROMEO:", "parting is such sweet sorrow", user_id=ALICE)
        await store(service, "ROMEO:", "my only love sprung from my only hate", user_id=ALICE)
        await store(service, "ROMEO:", "sorrow for someone else", user_id="300000000000000002")
        searched = await fake.slash("history", [opt("query", "sorrow")])
        await fake.wait_for(lambda: ephemeral_text(fake, searched.token))
        nothing = await fake.slash("history", [opt("query", "plague")])
        await fake.wait_for(lambda: ephemeral_text(fake, nothing.token))
        refused = await fake.slash("history", [opt("query", "-sorrow")])
        await fake.wait_for(lambda: ephemeral_text(fake, refused.token))
    answer = ephemeral_text(fake, searched.token)
    assert "sweet sorrow" in answer and "someone else" not in answer and "only love" not in answer
    assert ephemeral_text(fake, nothing.token) == "No stored generation of yours matches."
    assert "at least one word" in ephemeral_text(fake, refused.token)

"""GenbotService end to end: real plugin folders, the real engine, a real database file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from genbot.config import load_settings
from genbot.errors import ConfigError, InvalidRequest, UnknownModel
from genbot.service import GenbotService, GenerationRequest, Requester
from genbot.storage import repository
from genbot.storage.db import Database
from genbot.storage.repository import NewGeneration
from tests.helpers import slow_down_model


async def _run(service: GenbotService, **kw: object) -> tuple[str, object]:
    who = {k: kw.pop(k) for k in ("frontend", "user_id") if k in kw}
    fields = {"model": "alpha", "prompt": "ROMEO:", "requester": Requester(**who)} | kw  # type: ignore[arg-type]
    gen = await service.generate(GenerationRequest(**fields))  # type: ignore[arg-type]
    text = "".join([chunk async for chunk in gen])
    return text, await gen.result()


async def test_generation_is_streamed_and_stored(service: GenbotService) -> None:
    text, result = await _run(service, length=50, seed=7, temperature=0.9, user_id="u1", frontend="repl")
    assert len(text) == 50
    [row] = await service.history()
    assert row.id == result.id  # type: ignore[attr-defined]
    assert (row.prompt, row.output, row.status, row.chars) == ("ROMEO:", text, "completed", 50)
    assert (row.model, row.seed, row.temperature, row.max_length) == ("alpha", 7, 0.9, 50)
    assert (row.frontend, row.user_id) == ("repl", "u1")
    assert row.time_to_first_char_ms is not None and row.duration_ms is not None
    assert row.duration_ms >= row.time_to_first_char_ms > 0


async def test_same_seed_same_text_and_seed_is_reported(service: GenbotService) -> None:
    a, _ = await _run(service, length=60, seed=123)
    b, _ = await _run(service, length=60, seed=123)
    c, _ = await _run(service, length=60, seed=124)
    assert a == b != c
    gen = await service.generate(GenerationRequest(model="alpha", prompt="x", length=5))
    await gen.result()
    rows = await service.history(limit=1)
    assert rows[0].seed == gen.params.seed is not None


async def test_cancel_keeps_partial_output(service: GenbotService) -> None:
    slow_down_model(service, "alpha")  # the cancel certainly lands mid-stream
    gen = await service.generate(GenerationRequest(model="alpha", prompt="ROMEO:", length=5000))
    got = ""
    async for chunk in gen:
        got += chunk
        if len(got) >= 20:
            gen.cancel()
    result = await gen.result()
    assert result.status == "cancelled"
    row = (await service.history(limit=1))[0]
    assert row.status == "cancelled"
    assert 20 <= row.chars < 5000
    assert row.output == result.output and row.output.startswith(got[:20])


async def test_long_generations_save_their_progress_together_in_one_transaction(
    service: GenbotService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import genbot.service

    saves: list[dict[int, str]] = []
    real = repository.update_progress_many

    async def recorded(db: Database, outputs: dict[int, str]) -> None:
        await real(db, outputs)
        saves.append(dict(outputs))  # once committed

    monkeypatch.setattr(genbot.service, "PROGRESS_EVERY_S", 0.05)
    monkeypatch.setattr(repository, "update_progress_many", recorded)
    slow_down_model(service, "alpha")  # all three are still running at a save
    gens = [await service.generate(GenerationRequest(model="alpha", prompt="ROMEO:", length=5000)) for _ in range(3)]

    def covered_all() -> bool:
        return any(len(batch) == 3 and all(batch.values()) for batch in saves)

    for _ in range(200):  # until one save has covered all three, each with some text
        if covered_all():
            break
        await asyncio.sleep(0.02)
    stored = {row.id: row for row in await service.history(limit=3)}
    for g in gens:
        g.cancel()
    results = [await g.result() for g in gens]
    assert covered_all()  # three rows, one write transaction
    for r in results:  # what was saved while running is the start of the final text
        assert stored[r.id].output and r.output.startswith(stored[r.id].output)


async def test_bad_requests_are_refused_before_anything_runs(service: GenbotService) -> None:
    with pytest.raises(UnknownModel, match="alpha, beta"):
        await service.generate(GenerationRequest(model="nope"))
    with pytest.raises(InvalidRequest, match="prompt has"):
        await service.generate(GenerationRequest(model="alpha", prompt="x" * 5000))
    with pytest.raises(InvalidRequest, match="max_length"):
        await service.generate(GenerationRequest(model="alpha", length=10**6))
    with pytest.raises(InvalidRequest, match="temperature"):
        await service.generate(GenerationRequest(model="alpha", temperature=50.0))
    with pytest.raises(InvalidRequest, match="temperature"):
        await service.generate(GenerationRequest(model="alpha", temperature=float("nan")))
    assert await service.history() == []


async def test_unknown_prompt_characters_are_reported(service: GenbotService) -> None:
    gen = await service.generate(GenerationRequest(model="alpha", prompt="ROMEO\u2019s \u4e2d", length=5))
    await gen.result()
    assert gen.mapped == {"\u2019": "'"} or "\u2019" in gen.dropped
    assert "\u4e2d" in gen.dropped


async def test_200_concurrent_generations_write_200_rows(service: GenbotService) -> None:
    async def one(i: int) -> str:
        text, _ = await _run(service, model="alpha" if i % 2 else "beta", length=20, seed=i, user_id=f"u{i % 7}")
        return text

    texts = await asyncio.gather(*(one(i) for i in range(200)))
    assert all(len(t) == 20 for t in texts)
    rows = await service.history(limit=1000)
    assert len(rows) == 200
    assert {r.status for r in rows} == {"completed"}


async def test_history_filters_and_forget(service: GenbotService) -> None:
    await _run(service, prompt="first", length=5, user_id="ann")
    await _run(service, model="beta", prompt="second", length=5, user_id="bob")
    assert [r.prompt for r in await service.history(user_id="ann")] == ["first"]
    assert [r.prompt for r in await service.history(model="beta")] == ["second"]
    assert [r.prompt for r in await service.history(search="seco")] == ["second"]
    assert await service.forget("ann") == 1
    assert [r.user_id for r in await service.history()] == ["bob"]


async def test_rows_left_running_by_a_crash_are_marked_failed(
    plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    async with Database.open(db_url, upgrade=True) as db:
        gid = await repository.start_generation(
            db, NewGeneration(model="alpha", prompt="p", temperature=0.8, max_length=10, frontend="repl")
        )
        await repository.update_progress(db, gid, "partial", 7)
    async with GenbotService(load_settings()) as svc:
        [row] = await svc.history()
    assert (row.status, row.output) == ("failed", "partial")
    assert "interrupted" in (row.error or "")


async def test_an_unmigrated_server_database_is_refused_clearly(
    plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("the embedded SQLite database is migrated automatically")
    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    with pytest.raises(ConfigError, match="genbot db upgrade"):
        async with GenbotService(load_settings()):
            pass


async def test_a_broken_plugin_is_skipped_and_reported(plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plugins_dir / "beta" / "model.safetensors").write_bytes(b"corrupt")
    async with GenbotService(load_settings()) as svc:
        entries = {e.name: e for e in svc.models()}
        assert entries["alpha"].status == "loaded"
        assert entries["beta"].status == "failed"
        assert "sha256" in (entries["beta"].error or "")
        text, _ = await _run(svc, length=10)
        assert len(text) == 10


def test_db_upgrade_command_prepares_a_server_database(
    plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import genbot

    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    proc = genbot("db", "upgrade")
    assert proc.returncode == 0, proc.stderr
    assert "latest migration" in proc.stdout
    proc = genbot("history", "--json")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr

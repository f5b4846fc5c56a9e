"""Model versions: numbering under concurrency, the activation policy, rollback, and live pickup."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from genbot.config import VersionsSettings, load_settings
from genbot.engine.registry import ModelRegistry
from genbot.errors import CheckpointError, ConfigError, InvalidRequest, NotFound
from genbot.networks.card import ModelCard
from genbot.service import GenbotService, GenerationRequest
from genbot.storage.db import Database
from genbot.storage.migrate import upgrade_database
from genbot.storage.tables import ModelVersion
from genbot.versions.store import (
    activate_if,
    activate_version,
    active_version,
    get_version,
    list_versions,
    register_version,
)
from genbot.versions.watcher import VersionWatcher, ensure_bundled_versions, register_and_maybe_activate, rollback
from tests.helpers import genbot_here, slow_down, write_model_folder


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database.open(db_url, upgrade=True) as opened:
        yield opened


def _set_val_loss(folder: Path, val_block: float) -> Path:
    """Give a model folder's card a measured val loss, as a trained plugin has."""
    card = ModelCard.read(folder / "plugin.toml")
    (folder / "plugin.toml").write_text(card.model_copy(update={"metrics": {"val_block": val_block}}).to_toml())
    return folder


async def _active(db: Database, model: str = "alpha") -> int:
    """The active version number of ``model``."""
    row = await active_version(db, model)
    assert row is not None
    return row.version


async def _register(db: Database, model: str = "alpha", **kw: Any) -> int:
    path, val_loss = kw.pop("path", f"/models/{model}"), kw.pop("val_loss", None)
    row = await register_version(db, model=model, path=path, val_loss=val_loss, **kw)
    return row.version


# ----- storage: numbering and the one active version -------------------------------------------------


async def test_versions_are_numbered_per_model_even_when_registered_concurrently(db_url: str) -> None:
    # Two handles, two pools: on SQLite two writers contend for the file, on PostgreSQL two connections race.
    async with Database.open(db_url, upgrade=True) as one, Database.open(db_url, upgrade=False) as two:
        handles = [one, two] * 8
        got = await asyncio.gather(*(_register(h, "alpha" if i % 4 else "beta") for i, h in enumerate(handles)))
        assert sorted(v for v, i in zip(got, range(16), strict=True) if i % 4) == list(range(1, 13))
        assert [v.version for v in await list_versions(one, "alpha")] == list(range(1, 13))
        assert [v.version for v in await list_versions(two, "beta")] == [1, 2, 3, 4]
        assert all(not v.active for v in await list_versions(one, "alpha"))


async def test_exactly_one_version_is_active(db: Database) -> None:
    for _ in range(3):
        await _register(db, val_loss=1.0, corpus="plays", job_id=7, parent_version=None)
    assert await active_version(db, "alpha") is None
    await activate_version(db, "alpha", 2)
    row = await activate_version(db, "alpha", 3)
    assert (row.version, row.active, row.corpus, row.job_id) == (3, True, "plays", 7)
    assert [v.active for v in await list_versions(db, "alpha")] == [False, False, True]
    assert (await active_version(db, "alpha")) == await get_version(db, "alpha", 3)
    with pytest.raises(NotFound, match="no version 9"):
        await activate_version(db, "alpha", 9)
    with pytest.raises(NotFound):
        await get_version(db, "nobody", 1)
    # The database itself refuses a second active version, whatever code tries it.
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            await session.execute(update(ModelVersion).where(ModelVersion.version == 1).values(active=True))


async def test_parallel_activations_leave_one_active_version_and_if_better_picks_the_best(db_url: str) -> None:
    """Workers on two pools finishing at once: never an error, exactly one active, the lowest loss wins."""
    async with Database.open(db_url, upgrade=True) as one, Database.open(db_url, upgrade=False) as two:
        losses = [1.9, 1.3, 1.7, 1.1, 1.5, 1.2, 1.8, 1.4]
        versions = [await _register(one, val_loss=loss) for loss in losses]

        def better(active: Any, candidate: Any) -> bool:
            return active is None or candidate.val_loss < active.val_loss

        handles = [one, two] * 4
        results = await asyncio.gather(
            *(activate_if(h, "alpha", v, better) for h, v in zip(handles, versions, strict=True))
        )
        assert any(switched for _, switched in results)
        assert [v.version for v in await list_versions(two, "alpha") if v.active] == [losses.index(1.1) + 1]
        # Plain activations racing: whichever commits last is the one active version, and only one is.
        await asyncio.gather(*(activate_version(h, "alpha", v) for h, v in zip(handles, versions, strict=True)))
        assert sum(v.active for v in await list_versions(one, "alpha")) == 1


# ----- policy ---------------------------------------------------------------------------------------


@pytest.fixture
def policy_settings(plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Settings with the given auto_activate policy; the bundled alpha has val loss 2.0."""
    _set_val_loss(plugins_dir / "alpha", 2.0)

    def settings(policy: str) -> Any:
        monkeypatch.setenv("GENBOT_VERSIONS__AUTO_ACTIVATE", policy)
        return load_settings()

    return settings


async def test_if_better_activates_only_a_lower_val_loss(db: Database, policy_settings: Callable[[str], Any]) -> None:
    settings = policy_settings("if_better")
    worse, activated = await register_and_maybe_activate(db, settings, model="alpha", path="/v2", val_loss=2.5)
    assert (worse.version, activated) == (2, False)  # version 1 is the bundled plugin, val 2.0
    bundled = await get_version(db, "alpha", 1)
    assert (bundled.active, bundled.val_loss, Path(bundled.path).name) == (True, 2.0, "alpha")
    better, activated = await register_and_maybe_activate(
        db, settings, model="alpha", path="/v3", val_loss=1.5, parent_version=1, corpus="plays", job_id=4
    )
    assert (better.version, better.active, activated) == (3, True, True)
    assert (better.parent_version, better.corpus, better.job_id) == (1, "plays", 4)
    _, activated = await register_and_maybe_activate(db, settings, model="alpha", path="/v4", val_loss=None)
    assert not activated
    _, activated = await register_and_maybe_activate(db, settings, model="alpha", path="/v5", val_loss=1.5)
    assert not activated
    assert await _active(db) == 3


async def test_always_and_never(db: Database, policy_settings: Callable[[str], Any]) -> None:
    row, activated = await register_and_maybe_activate(
        db, policy_settings("never"), model="alpha", path="/v2", val_loss=0.1
    )
    assert (row.version, activated, row.active) == (2, False, False)
    assert await _active(db) == 1
    row, activated = await register_and_maybe_activate(
        db, policy_settings("always"), model="alpha", path="/v3", val_loss=9.0
    )
    assert (row.version, activated) == (3, True)
    assert await _active(db) == 3


async def test_a_model_without_a_bundled_plugin_starts_at_version_1(
    db: Database, policy_settings: Callable[[str], Any]
) -> None:
    row, activated = await register_and_maybe_activate(
        db, policy_settings("if_better"), model="gamma", path="/g", val_loss=3.0
    )
    assert (row.version, activated) == (1, True)  # nothing active to beat


def test_the_policy_is_validated_and_every_field_is_described(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_VERSIONS__AUTO_ACTIVATE", "sometimes")
    with pytest.raises(ConfigError, match="GENBOT_VERSIONS__AUTO_ACTIVATE"):
        load_settings()
    assert all(field.description for field in VersionsSettings.model_fields.values())


# ----- rollback -------------------------------------------------------------------------------------


async def test_rollback_goes_to_the_parent_else_the_version_below(db: Database) -> None:
    for parent in (None, 1, 1, None):  # v1; v2 and v3 tuned from v1; v4 from scratch
        await _register(db, parent_version=parent)
    await activate_version(db, "alpha", 3)
    assert (await rollback(db, "alpha")).version == 1  # v3's parent, not v2 (never served before v3)
    with pytest.raises(InvalidRequest, match="no version before 1"):
        await rollback(db, "alpha")
    await activate_version(db, "alpha", 4)
    assert (await rollback(db, "alpha")).version == 3  # no parent: the version below
    with pytest.raises(InvalidRequest, match="no active version"):
        await rollback(db, "nobody")


# ----- the service: bundled versions, live pickup -----------------------------------------------------


@pytest.fixture
def fast_polling(plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("GENBOT_VERSIONS__POLL_SECONDS", "0.05")
    return db_url


@pytest.fixture
async def service(fast_polling: str) -> AsyncIterator[GenbotService]:
    await upgrade_database(fast_polling)
    async with GenbotService(load_settings()) as svc:
        yield svc


async def _wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _db(service: GenbotService) -> Database:
    """The service's open database."""
    assert service.db is not None
    return service.db


def _registry(service: GenbotService) -> ModelRegistry:
    """The service's model registry."""
    assert service.registry is not None
    return service.registry


def _served_version(service: GenbotService, model: str = "alpha") -> int:
    """The version number the registry serves for ``model``."""
    card = _registry(service).get(model).card
    assert card is not None
    return card.version


async def _text(service: GenbotService, **kw: Any) -> tuple[str, Any]:
    fields: dict[str, Any] = {"model": "alpha", "prompt": "ROMEO:", "temperature": 1.0} | kw
    gen = await service.generate(GenerationRequest(**fields))
    return "".join([chunk async for chunk in gen]), gen


async def test_bundled_models_are_version_1_once(service: GenbotService, plugins_dir: Path) -> None:
    [alpha] = await service.versions.list("alpha")
    assert (alpha.version, alpha.active, Path(alpha.path)) == (1, True, (plugins_dir / "alpha").resolve())
    assert [v.version for v in await service.versions.list("beta")] == [1]
    assert await ensure_bundled_versions(_db(service), _registry(service)) == 0
    assert await service.versions.list("nobody") == []


async def test_a_running_server_swaps_to_a_newly_active_version(
    service: GenbotService, tmp_path: Path, corpus_text: str
) -> None:
    old = _registry(service).get("alpha").loaded
    assert old is not None
    # Slow the old model down, so the stream below is certainly still running during the swap.
    slow_down(old.network)
    reference, _ = await _text(service, seed=7, length=250)

    folder = write_model_folder(tmp_path / "trained", "alpha", corpus_text, seed=99)
    row = await register_version(_db(service), model="alpha", path=str(folder), val_loss=1.0, parent_version=1)
    running = await service.generate(
        GenerationRequest(model="alpha", prompt="ROMEO:", temperature=1.0, seed=7, length=250)
    )
    first = await running.__aiter__().__anext__()  # primed and stepping on version 1

    await service.versions.activate("alpha", row.version)
    await _wait_for(lambda: _served_version(service) == 2)
    assert not running.stream.done  # the swap happened mid-stream
    new = _registry(service).get("alpha").loaded
    assert new is not None and new is not old and Path(new.path) == folder

    rest = "".join([chunk async for chunk in running])
    assert first + rest == reference  # the old stream finished on the old model, same seed, same text
    assert running.entry.loaded is old and running.version == 1
    after, gen = await _text(service, seed=7, length=250)
    assert gen.entry.loaded is new and gen.version == 2 and after != reference
    rows = await service.history(limit=3)
    assert [r.model_version for r in rows[:2]] == ["2", "1"]


async def test_a_corrupt_version_is_logged_and_the_old_one_keeps_serving(
    service: GenbotService, tmp_path: Path, corpus_text: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = _registry(service).get("alpha").loaded
    broken = write_model_folder(tmp_path / "broken", "alpha", corpus_text, seed=3)
    (broken / "model.safetensors").write_bytes(b"not weights")
    v2 = await register_version(_db(service), model="alpha", path=str(broken), val_loss=0.5)
    with pytest.raises(CheckpointError, match="sha256"):
        await service.versions.activate("alpha", v2.version)  # the admin command refuses it up front
    assert await _active(_db(service)) == 1

    with caplog.at_level(logging.WARNING, logger="genbot.versions"):
        await activate_version(_db(service), "alpha", v2.version)  # e.g. a job's auto-activation
        await _wait_for(lambda: "failed to load" in caplog.text)
        await asyncio.sleep(0.3)  # several more polls
    assert caplog.text.count("failed to load") == 1  # logged once, not on every poll
    assert _registry(service).get("alpha").loaded is old
    text, gen = await _text(service, length=20)
    assert len(text) == 20 and gen.version == 1

    good = write_model_folder(tmp_path / "good", "alpha", corpus_text, seed=4)
    v3 = await register_version(_db(service), model="alpha", path=str(good), val_loss=0.4)
    await activate_version(_db(service), "alpha", v3.version)
    await _wait_for(lambda: _served_version(service) == 3)


async def test_a_restarted_server_serves_the_active_version_at_once(
    fast_polling: str, tmp_path: Path, corpus_text: str
) -> None:
    await upgrade_database(fast_polling)
    async with GenbotService(load_settings()) as svc:
        folder = write_model_folder(tmp_path / "trained", "alpha", corpus_text, seed=5)
        await register_version(_db(svc), model="alpha", path=str(folder), val_loss=None)
    async with GenbotService(load_settings()) as svc:
        await svc.versions.activate("alpha", 2)
        await svc.versions.rollback("alpha")
        await svc.versions.activate("alpha", 2)
    async with GenbotService(load_settings()) as svc:
        loaded = _registry(svc).get("alpha").loaded
        assert _served_version(svc) == 2 and loaded is not None and Path(loaded.path) == folder


async def test_a_model_that_exists_only_as_versions_is_served(service: GenbotService, tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "trained", "gamma", "GAMMA text for the gamma model\n", seed=6)
    _, activated = await register_and_maybe_activate(
        _db(service),
        service.settings,
        model="gamma",
        path=str(folder),
        val_loss=2.0,
    )
    assert activated
    await _wait_for(lambda: "gamma" in _registry(service).names())
    text, gen = await _text(service, model="gamma", prompt="GAMMA", length=10)
    assert len(text) == 10 and gen.version == 1


async def test_swapped_in_versions_serve_through_the_forced_paths(
    fast_polling: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, corpus_text: str
) -> None:
    monkeypatch.setenv("GENBOT_ENGINE__PRIME_PATH", "bf16")
    monkeypatch.setenv("GENBOT_ENGINE__STEP_PATH", "fp32")
    await upgrade_database(fast_polling)
    async with GenbotService(load_settings()) as svc:
        trained = write_model_folder(tmp_path / "trained", "alpha", corpus_text, seed=8)
        row = await register_version(_db(svc), model="alpha", path=str(trained), val_loss=1.0, parent_version=1)
        await svc.versions.activate("alpha", row.version)  # replaces a served model
        gamma = write_model_folder(tmp_path / "gamma", "gamma", "GAMMA text for the gamma model\n", seed=6)
        await register_and_maybe_activate(_db(svc), svc.settings, model="gamma", path=str(gamma), val_loss=2.0)
        await _wait_for(lambda: _served_version(svc) == 2 and "gamma" in _registry(svc).names())
        for name in ("alpha", "gamma"):
            paths = _registry(svc).get(name).serving_paths()
            assert paths is not None and (paths["prime"], paths["step"]) == ("bf16", "fp32"), name
        assert set(svc.serving_paths()) >= {"alpha", "beta", "gamma"}


async def test_a_pass_that_meets_a_running_pass_returns_only_once_the_version_is_served(
    fast_polling: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a caller of sync() is owed even while the background poll is loading the same version."""
    await upgrade_database(fast_polling)
    async with GenbotService(load_settings()) as svc:
        watcher = VersionWatcher(_db(svc), _registry(svc), poll_seconds=3600)
        real = watcher._load_and_replace

        def slow_load(row: Any) -> None:
            time.sleep(0.5)  # a big model under load: the other pass must wait for it
            real(row)

        monkeypatch.setattr(watcher, "_load_and_replace", slow_load)
        gamma = write_model_folder(tmp_path / "gamma", "gamma", "GAMMA text for the gamma model\n", seed=6)
        await register_and_maybe_activate(_db(svc), svc.settings, model="gamma", path=str(gamma), val_loss=2.0)
        first = asyncio.create_task(watcher.sync())
        await asyncio.sleep(0.1)  # the first pass is loading gamma now
        await watcher.sync()
        assert "gamma" in _registry(svc).names()
        assert "gamma" in await first


# ----- the command line --------------------------------------------------------------------------------


def test_cli_versions_activate_rollback(plugins_dir: Path, tmp_path: Path, corpus_text: str) -> None:
    assert [json.loads(m)["name"] for m in genbot_here("models", "--json").stdout.splitlines()] == ["alpha", "beta"]
    folder = write_model_folder(tmp_path / "trained", "alpha", corpus_text, seed=8)

    async def add_version() -> None:
        async with Database.open(load_settings().effective_database_url) as db:
            # What a finished job does; the first command above already seeded the bundled v1.
            await register_version(db, model="alpha", path=str(folder), val_loss=1.2, parent_version=1, corpus="plays")

    genbot_here("models", "versions", "alpha")  # opening the service seeds version 1
    asyncio.run(add_version())
    rows = [json.loads(line) for line in genbot_here("models", "versions", "alpha", "--json").stdout.splitlines()]
    assert [(r["version"], r["active"], r["parent_version"], r["corpus"]) for r in rows] == [
        (1, True, None, None),
        (2, False, 1, "plays"),
    ]
    proc = genbot_here("models", "activate", "alpha", "2")
    assert (proc.returncode, proc.stdout.strip()) == (0, "alpha: version 2 is active"), proc.stderr
    listing = genbot_here("models", "versions", "alpha").stdout.splitlines()
    assert listing[1].startswith("* v2") and listing[0].startswith("  v1")
    assert genbot_here("models", "rollback", "alpha").stdout.strip() == "alpha: rolled back to version 1"

    for args, message in [
        (("activate", "alpha", "9"), "error: model 'alpha' has no version 9"),
        (("rollback", "alpha"), "error: model 'alpha' has no version before 1 to roll back to"),
        (("versions", "nobody"), "error: no versions recorded for model 'nobody'"),
    ]:
        proc = genbot_here("models", *args)
        assert (proc.returncode, proc.stderr.strip()) == (2, message)
    assert "alpha" in genbot_here("models").stdout


async def test_a_model_put_in_place_by_hand_stays_until_the_next_activation(
    service: GenbotService, tmp_path: Path, corpus_text: str
) -> None:
    by_hand = write_model_folder(tmp_path / "by-hand", "alpha", corpus_text, seed=11)
    service.add_model_folder(by_hand)  # what `genbot sample ./folder` does
    await asyncio.sleep(0.3)  # several polls: the watcher acts on activations, not on every difference
    loaded = _registry(service).get("alpha").loaded
    assert loaded is not None and Path(loaded.path) == by_hand
    trained = write_model_folder(tmp_path / "trained", "alpha", corpus_text, seed=12)
    row = await register_version(_db(service), model="alpha", path=str(trained), val_loss=None)
    await activate_version(_db(service), "alpha", row.version)
    await _wait_for(lambda: _served_version(service) == 2)

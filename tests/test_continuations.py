"""Continuing stored generations, running them again, threads and presets, through the service; migration 0008.

On SQLite and (with GENBOT_TEST_DATABASE_URL) PostgreSQL: the ``service`` fixture runs each test on both.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text

from genbot.errors import InvalidRequest, NotFound
from genbot.service import GenbotService, GenerationRequest, Identity, PresetParams, Requester, parse_preset
from genbot.storage.db import Database
from genbot.storage.migrate import alembic_config, current_revision, upgrade_database
from genbot.storage.repository import NewGeneration, forget_user, list_generations, start_generation

ALICE = Identity("api", api_key_id="1")
BOB = Identity("api", api_key_id="2")
ADMIN = Identity("api", api_key_id="3", admin=True)


WHO = ("frontend", "user_id", "guild_id", "channel_id", "api_key_id")


def _req(**fields: object) -> GenerationRequest:
    """A request with who asks (``frontend``, ``user_id``, ``api_key_id``) given among the fields."""
    who = {"frontend": "api", "api_key_id": "1"} | {k: fields.pop(k) for k in WHO if k in fields}
    base: dict[str, object] = {"model": "alpha", "requester": Requester(**who)}  # type: ignore[arg-type]
    return GenerationRequest(**(base | fields))  # type: ignore[arg-type]


async def _run(service: GenbotService, req: GenerationRequest) -> tuple[int, str]:
    gen = await service.generate(req)
    result = await gen.result()
    return result.id, result.output


async def test_a_continuation_reads_the_parents_tail_is_linked_and_reproducible(service: GenbotService) -> None:
    service.settings.sampling.context_chars = 30
    parent_id, parent_text = await _run(service, _req(prompt="ROMEO:", length=40, seed=5, temperature=0.7))
    first_id, first = await _run(service, _req(model="", continue_from=parent_id, seed=11))
    again_id, again = await _run(service, _req(model="", continue_from=parent_id, seed=11))
    row = await service.generation(first_id, ALICE)
    assert row.parent_id == parent_id
    assert row.prompt == ("ROMEO:" + parent_text)[-30:]  # the context it was actually given
    assert (row.model, row.temperature, row.max_length, row.seed) == ("alpha", 0.7, 40, 11)  # parent's settings
    assert first == again and len(first) == 40 and again_id != first_id  # same context + seed → same text
    # The stored prompt and seed alone reproduce it, without the link.
    _, replayed = await _run(service, _req(prompt=row.prompt, seed=11, temperature=0.7, length=40))
    assert replayed == first


async def test_added_text_follows_the_context_and_request_fields_win(service: GenbotService) -> None:
    parent_id, parent_text = await _run(service, _req(prompt="JULIET:", length=20, seed=1))
    child_id, child = await _run(service, _req(model="", continue_from=parent_id, prompt="\nNURSE:", length=7))
    row = await service.generation(child_id, ALICE)
    assert row.prompt == "JULIET:" + parent_text + "\nNURSE:"
    assert len(child) == 7 and row.max_length == 7


async def test_someone_elses_generation_is_refused_like_an_unknown_id(service: GenbotService) -> None:
    parent_id, _ = await _run(service, _req(prompt="ROMEO:", length=10))
    with pytest.raises(NotFound) as other:
        await service.generate(_req(model="", continue_from=parent_id, api_key_id="2"))
    with pytest.raises(NotFound) as unknown:
        await service.generate(_req(model="", continue_from=10**9, api_key_id="2"))
    assert str(other.value) == f"no generation with id {parent_id}"
    assert str(unknown.value) == f"no generation with id {10**9}"
    for absurd in (0, -1, 2**70):  # never reach the database as a comparison it cannot make
        with pytest.raises(NotFound, match=f"no generation with id {absurd}"):
            await service.generate(_req(model="", continue_from=absurd))
    with pytest.raises(NotFound):
        await service.generate(_req(model="", again_of=parent_id, frontend="discord", user_id="1", api_key_id=None))
    with pytest.raises(NotFound):
        await service.thread(parent_id, BOB)
    assert len(await service.history()) == 1  # nothing was stored for the refused requests
    # An admin may continue anyone's.
    child_id, _ = await _run(service, _req(model="", continue_from=parent_id, api_key_id="3", admin=True, length=5))
    assert (await service.generation(child_id, ADMIN)).parent_id == parent_id


async def test_again_repeats_prompt_and_settings_with_a_new_seed(service: GenbotService) -> None:
    root_id, _ = await _run(service, _req(prompt="ROMEO:", length=12, seed=3, temperature=0.9, stop=["zzz"]))
    child_id, _ = await _run(service, _req(model="", continue_from=root_id, length=8, seed=4))
    again_id, _ = await _run(service, _req(model="", again_of=child_id))
    child, again = await service.generation(child_id, ALICE), await service.generation(again_id, ALICE)
    assert again.prompt == child.prompt and again.max_length == 8 and again.temperature == 0.9
    assert again.stop == ("zzz",)
    assert again.seed != child.seed
    assert again.parent_id == root_id  # an alternative to the child, at the same place in the thread
    with pytest.raises(InvalidRequest, match="one or the other"):
        await service.generate(_req(continue_from=root_id, again_of=root_id))


async def test_a_thread_lists_ancestors_and_continuations_oldest_first(service: GenbotService) -> None:
    root, _ = await _run(service, _req(prompt="A", length=5))
    middle, _ = await _run(service, _req(model="", continue_from=root, length=5))
    leaf, _ = await _run(service, _req(model="", continue_from=middle, length=5))
    other, _ = await _run(service, _req(prompt="B", length=5))
    # A row of Bob's below Alice's (an admin key may continue anyone's): not in Alice's view of the thread.
    bob_row, _ = await _run(service, _req(model="", continue_from=leaf, api_key_id="2", admin=True, length=5))
    assert [r.id for r in await service.thread(middle, ALICE)] == [root, middle, leaf]
    assert [r.id for r in await service.thread(root, ADMIN)] == [root, middle, leaf, bob_row]
    assert [r.id for r in await service.thread(other, ALICE)] == [other]


async def test_presets_fill_unset_fields_and_a_fixed_seed_reproduces(service: GenbotService) -> None:
    owner = ALICE.preset_owner
    await service.presets.save(
        owner, "calm", {"model": "beta", "temperature": 0.3, "length": 9, "seed_policy": "fixed", "seed": 77}
    )
    a_id, a = await _run(service, _req(model="", preset="calm"))
    _, b = await _run(service, _req(model="", preset="calm"))
    c_id, _ = await _run(service, _req(preset="calm", length=4))  # the request's own fields win
    a_row, c_row = await service.generation(a_id, ALICE), await service.generation(c_id, ALICE)
    assert a == b and len(a) == 9
    assert (a_row.model, a_row.temperature, a_row.seed) == ("beta", 0.3, 77)
    assert (c_row.model, c_row.max_length) == ("alpha", 4)
    with pytest.raises(NotFound, match="no preset named 'calm'"):
        await service.generate(_req(preset="calm", api_key_id="2"))  # Bob has no such preset


async def test_global_presets_are_everyones_and_own_ones_shadow_them(service: GenbotService) -> None:
    await service.presets.save(ADMIN.preset_owner, "house", {"temperature": 0.5}, global_=True)
    await service.presets.save(ALICE.preset_owner, "house", {"temperature": 1.5})
    assert (await service.presets.find(BOB.preset_owner, "house")).params.temperature == 0.5
    assert (await service.presets.find(ALICE.preset_owner, "house")).params.temperature == 1.5
    listed = [(p.name, p.is_global) for p in await service.presets.list(ALICE.preset_owner)]
    assert listed == [("house", False), ("house", True)]
    await service.presets.delete(ALICE.preset_owner, "house")
    assert (await service.presets.find(ALICE.preset_owner, "house")).is_global
    with pytest.raises(NotFound):
        await service.presets.delete(ALICE.preset_owner, "house")  # the global one is not Alice's to delete


HOSTILE_NAMES = ["", " ", "a b", "../etc", "_last", "x" * 65, "名前", "a\x00", "-dash", "a;DROP TABLE presets"]
HOSTILE_PARAMS = [
    {"temperature": "hot"},
    {"temperature": float("nan")},
    {"temperature": -1.0},
    {"top_p": 0.0},
    {"top_k": -3},
    {"length": 0},
    {"length": 10**12},
    {"stop": ["x"] * 9},
    {"stop": [""]},
    {"stop": ["x" * 101]},
    {"stop": "\n"},
    {"seed_policy": "fixed"},
    {"seed_policy": "random", "seed": 5},
    {"seed": -1, "seed_policy": "fixed"},
    {"model": "../../etc/passwd"},
    {"unknown": 1},
    {"length": True},
    {"temperature": None, "extra": {"nested": []}},
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_preset_names_are_refused_and_nothing_is_stored(service: GenbotService, name: str) -> None:
    with pytest.raises(InvalidRequest, match="preset name"):
        await service.presets.save(ALICE.preset_owner, name, {"temperature": 0.5})
    assert await service.presets.list(ALICE.preset_owner) == []
    assert await service.presets.last_used(ALICE.preset_owner) is None


async def test_hostile_preset_params_are_refused_and_nothing_is_stored(service: GenbotService) -> None:
    for params in HOSTILE_PARAMS:
        with pytest.raises(InvalidRequest, match="preset 'p'"):
            await service.presets.save(ALICE.preset_owner, "p", params)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="parameters must be an object"):
        await service.presets.save(ALICE.preset_owner, "p", ["temperature", 1])  # type: ignore[arg-type]
    assert await service.presets.list(ALICE.preset_owner) == []


async def test_last_used_settings_are_kept_per_owner_and_never_listed(service: GenbotService) -> None:
    local = Identity("repl", user_id="local").preset_owner
    await service.presets.remember(local, service_params(temperature=0.4, length=12))
    await service.presets.remember(local, service_params(temperature=0.6, length=12))
    assert (await service.presets.last_used(local)) == service_params(temperature=0.6, length=12)
    assert await service.presets.last_used(Identity("repl", user_id="someone").preset_owner) is None
    assert await service.presets.list(local) == []


def service_params(**fields: object) -> PresetParams:
    return parse_preset(fields)


async def test_0008_keeps_existing_rows_and_downgrades(db_url: str) -> None:
    await upgrade_database(db_url, "0007")
    async with Database.open(db_url, upgrade=False) as db, db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO generations (created_at, model, prompt, output, temperature, max_length, stop, chars,"
                " status, frontend, user_id) VALUES (:at, 'm', 'p', 'out', 0.8, 10, '[]', 3, 'completed', 'api', 'u')"
            ),
            {"at": datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
    await upgrade_database(db_url)
    async with Database.open(db_url, upgrade=False) as db:
        [row] = await list_generations(db)
        assert (row.output, row.parent_id) == ("out", None)
        child = await start_generation(db, NewGeneration(model="m", prompt="pout", temperature=0.8, max_length=5,
                                                         frontend="api", user_id="u", parent_id=row.id))  # fmt: skip
        assert await forget_user(db, "u") == 2
        # The table rebuilt for the foreign key still never hands out a forgotten id again.
        later = await start_generation(db, NewGeneration(model="m", prompt="", temperature=0.8, max_length=5,
                                                         frontend="api"))  # fmt: skip
        assert later > child
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0007")
    async with Database.open(db_url, upgrade=False) as db, db.engine.connect() as conn:
        assert await current_revision(db.engine) == "0007"
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        columns = await conn.run_sync(lambda sync: [c["name"] for c in inspect(sync).get_columns("generations")])
    assert "presets" not in tables and "parent_id" not in columns

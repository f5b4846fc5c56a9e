"""The Discord bot end to end: the real discord.py client against genbot's fake Discord on loopback.

Each test runs a real ``GenbotService`` (a real SQLite file, the ``plugins_dir`` models plus a
slowed scripted model, so streaming spans several seconds) and a real ``GenbotBot`` connected
to ``FakeDiscord``; interactions are dispatched over the fake gateway and every REST call the
bot makes is recorded with its arrival time.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from genbot.config import bundled_plugins_dir, load_settings
from genbot.errors import ConfigError
from genbot.frontends.discord import GenbotBot
from genbot.frontends.discord.inspect import MAX_INSPECTIONS, InspectCommands
from genbot.frontends.discord.streaming import MESSAGE_LIMIT, paginate
from genbot.jobs.spec import RetrainRequest
from genbot.quotas import store as quota_store
from genbot.quotas.policy import Subject
from genbot.service import GenbotService
from genbot.testing.fake_discord import (
    ATTACHMENT,
    INTEGER,
    SUBCOMMAND,
    USER,
    FakeClock,
    FakeDiscord,
    FakeMessage,
)
from genbot.training.caption_data import HELD_OUT_SEED
from genbot.training.scenes import render_scene
from tests.helpers import OWNER, callbacks, ephemeral_text, finished, opened_service, opt, pages_of, running_bot

torch.set_num_threads(1)


@pytest.fixture
def discord_env(plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast version pickup and job polling for the tests."""
    monkeypatch.setenv("GENBOT_VERSIONS__POLL_SECONDS", "0.3")
    monkeypatch.setenv("GENBOT_JOBS__POLL_SECONDS", "0.2")
    monkeypatch.setenv("GENBOT_JOBS__TRAIN_THREADS", "1")


ALICE_ID = "300000000000000001"


async def synced_commands(fake: FakeDiscord, bot: GenbotBot) -> list[Any]:
    """Sync the bot's commands (what ``genbot discord sync`` does) and return what Discord got."""
    await bot.sync_commands()
    return list(fake.calls_to("PUT", r"/applications/\d+/commands$")[-1].body)


def assert_paced(message: FakeMessage, interval: float) -> float:
    """No two edits of ``message`` arrived closer than ``interval``; returns the smallest gap."""
    gaps = [b - a for a, b in zip(message.edits, message.edits[1:], strict=False)]
    assert all(gap >= interval for gap in gaps), gaps
    return min(gaps) if gaps else float("inf")


# ----- streaming -------------------------------------------------------------------------------


async def test_generate_defers_at_once_streams_paced_edits_and_splits_long_fenced_output(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        fake.rate_limit_once("PATCH", r"/messages/@original$", retry_after=0.5)  # the first edit: 429
        sent = await fake.slash("generate", [opt("model", "slowc"), opt("prompt", "x"), opt("length", 2500, INTEGER)])
        await fake.wait_for(lambda: callbacks(fake, sent.token))
        defer = fake.calls_to("POST", rf"/{sent.token}/callback")[0]
        await fake.wait_for(lambda: finished(fake, sent), timeout=30)
        rows = await service.history(user_id="300000000000000001")
    latency = defer.at - sent.sent_at
    assert defer.body["type"] == 5 and latency < 3.0  # deferred ("thinking"), well within 3 s
    pages = pages_of(fake, sent)
    assert len(pages) >= 2  # 2,500 characters do not fit one message
    for page in pages:
        assert len(page.content) <= MESSAGE_LIMIT
        assert page.content.startswith("```c\n")
        assert_paced(page, 1.0)
    assert len(pages[0].edits) >= 3  # it streamed: several edits before the final one
    bodies = [p.content.split("\n```", 1)[0].removeprefix("```c\n") for p in pages]
    assert "".join(bodies) == rows[0].output and len(rows[0].output) == 2500
    assert all(body.endswith("\n") for body in bodies[:-1])  # split at line boundaries
    footer = pages[-1].content.rsplit("\n", 1)[-1]
    assert footer.startswith("-# slowc v1 · temp") and f"seed {rows[0].seed}" in footer and "chars/s" in footer
    print(
        f"deferral latency {latency * 1000:.1f} ms; smallest edit gap {min(assert_paced(p, 1.0) for p in pages):.3f} s"
    )


def test_paginate_splits_at_line_boundaries_and_never_changes_a_full_page() -> None:
    text = "".join(f"line {i}\n" for i in range(400))
    pages = paginate(text, 100)
    assert "".join(pages) == text and all(len(p) <= 100 for p in pages)
    assert all(p.endswith("\n") for p in pages[:-1])
    assert (
        paginate(text + "more", 100)[:-1] == pages[:-1] or paginate(text + "more", 100)[: len(pages) - 1] == pages[:-1]
    )
    assert paginate("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]  # no newline: hard cut


async def test_the_stop_button_cancels_and_the_row_says_cancelled(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        sent = await fake.slash("generate", [opt("model", "slow"), opt("prompt", "x"), opt("length", 5000, INTEGER)])
        original = await fake.wait_for(lambda: (m := fake.original(sent)) and m.components and m)
        button = original.components[0]["components"][0]
        assert button["label"] == "Stop"
        clicked = time.monotonic()
        await fake.click(button["custom_id"], original.id)
        await fake.wait_for(lambda: finished(fake, sent), timeout=10)
        stopped = time.monotonic() - clicked
        rows = await service.history(user_id="300000000000000001")
    assert rows[0].status == "cancelled" and len(rows[0].output) < 5000
    assert "cancelled" in fake.original(sent).content  # type: ignore[union-attr]
    assert stopped < 3.0


async def test_a_429_with_retry_after_is_honoured(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        fake.rate_limit_once("POST", r"/interactions/\d+/[^/]+/callback", retry_after=0.4)
        sent = await fake.slash("history")
        await fake.wait_for(lambda: callbacks(fake, sent.token))
    limited, retried = fake.calls_to("POST", rf"/{sent.token}/callback")
    assert limited.status == 429 and retried.status == 200
    assert retried.at - limited.at >= 0.4
    assert "no stored generations" in ephemeral_text(fake, sent.token)


# ----- permissions and quotas ------------------------------------------------------------------


def _user_option(user_id: str, name: str) -> tuple[dict[str, object], dict[str, object]]:
    """A USER option and the resolved data discord.py needs for it."""
    user = {"id": user_id, "username": name, "discriminator": "0", "global_name": name, "avatar": None}
    return opt("user", user_id, USER), {"users": {user_id: user}}


async def _queued_job(service: GenbotService, corpus_file: Path) -> int:
    """A retrain job queued directly (no worker runs it), so a cancel has something to change."""
    await service.corpora.add("plays", [corpus_file])
    return (await service.jobs.retrain(RetrainRequest(model="alpha", corpus="plays", steps=5))).id


async def test_a_server_admin_elsewhere_cannot_change_anything_global(
    discord_env: None, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Anyone can create a server and invite a public bot: Manage Server there must not be enough.
    monkeypatch.setenv("GENBOT_DISCORD__ADMIN_ROLE_ID", FakeDiscord.ADMIN_ROLE_ID)
    attacker = FakeDiscord.member("300000000000000066", "mallory", admin=True, roles=[FakeDiscord.ADMIN_ROLE_ID])
    user_option, resolved = _user_option("300000000000000066", "mallory")
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        job = await _queued_job(service, corpus_file)
        attempts = {
            "retrain": [opt("model", "alpha"), opt("corpus", "plays"), opt("steps", 5, INTEGER)],
            "activate": [opt("model", "alpha"), opt("version", 1, INTEGER)],
            "rollback": [opt("model", "alpha")],
            "cancel": [opt("job", job, INTEGER)],
            "quota-user": [user_option, opt("chars_per_day", 0, INTEGER)],
            "quota-guild": [opt("chars_per_day", 0, INTEGER)],
        }
        sent = {
            name: await fake.slash(
                "admin", [_sub(name, *options)], member=attacker, resolved=resolved, guild_id=FakeDiscord.OTHER_GUILD_ID
            )
            for name, options in attempts.items()
        }
        await fake.wait_for(lambda: all(ephemeral_text(fake, i.token) for i in sent.values()))
        jobs = await service.jobs.list(limit=10)
        versions = await service.versions.list("alpha")
        db = service.db
        assert db is not None
        stored = [
            await quota_store.get_quota(db, "user", "300000000000000066"),
            await quota_store.get_quota(db, "guild", FakeDiscord.OTHER_GUILD_ID),
        ]
        owner_cancel = await fake.slash("admin", [_sub("cancel", opt("job", job, INTEGER))], member=OWNER)
        await fake.wait_for(lambda: ephemeral_text(fake, owner_cancel.token))
        cancelled = await service.jobs.get(job)
    for name, interaction in sent.items():
        [answer] = callbacks(fake, interaction.token)  # refused at once, ephemerally, nothing deferred
        assert answer["data"]["flags"] & 64  # type: ignore[index]
        assert ephemeral_text(fake, interaction.token) == (
            f"Only the bot's owners can use /admin {name}: it changes genbot for every server."
        )
    assert [(j.id, j.status) for j in jobs] == [(job, "queued")]  # no retrain queued, the job not cancelled
    assert [v.version for v in versions if v.active] == [1]
    assert stored == [None, None]
    assert f"Job #{job}: cancelled" in ephemeral_text(fake, owner_cancel.token) and cancelled.status == "cancelled"


async def test_team_developers_and_configured_owners_are_owners(
    discord_env: None, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_DISCORD__OWNER_IDS", "[300000000000000077]")
    developer = FakeDiscord.member("300000000000000011", "dev")
    read_only = FakeDiscord.member("300000000000000012", "viewer")
    configured = FakeDiscord.member("300000000000000077", "ops")
    async with FakeDiscord() as fake:
        fake.team = [("300000000000000011", "developer"), ("300000000000000012", "read_only")]
        async with opened_service() as service, running_bot(fake, service):
            job = await _queued_job(service, corpus_file)
            cancel = [_sub("cancel", opt("job", job, INTEGER))]
            refused = await fake.slash("admin", cancel, member=read_only)
            await fake.wait_for(lambda: ephemeral_text(fake, refused.token))
            by_team = await fake.slash("admin", cancel, member=developer)
            other = [opt("chars_per_day", 500, INTEGER), opt("server", FakeDiscord.OTHER_GUILD_ID)]
            by_config = await fake.slash("admin", [_sub("quota-guild", *other)], member=configured)
            app_owner = await fake.slash("admin", [_sub("rollback", opt("model", "alpha"))], member=OWNER)
            asked = (by_team, by_config, app_owner)
            await fake.wait_for(lambda: all(ephemeral_text(fake, i.token) for i in asked))
            limits = await service.quotas.limits(Subject("guild", FakeDiscord.OTHER_GUILD_ID))
    assert "Only the bot's owners" in ephemeral_text(fake, refused.token)  # read-only team members are not
    assert f"Job #{job}" in ephemeral_text(fake, by_team.token)
    assert ephemeral_text(fake, by_config.token).startswith(f"Quota of server {FakeDiscord.OTHER_GUILD_ID}")
    assert limits.chars_per_day == 500
    assert "Only the bot's owners" in ephemeral_text(fake, app_owner.token)  # a team owns the app, not its owner


async def test_a_server_admin_limits_a_member_in_their_server_only(
    discord_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_DISCORD__ADMIN_ROLE_ID", FakeDiscord.ADMIN_ROLE_ID)
    monkeypatch.setenv("GENBOT_DISCORD__QUOTAS__USER_COOLDOWN_S", "0")
    user_option, resolved = _user_option(ALICE_ID, "alice")
    role_holder = FakeDiscord.member("300000000000000004", "dave", roles=[FakeDiscord.ADMIN_ROLE_ID])
    plain = FakeDiscord.member("300000000000000005", "erin")
    limit = [_sub("quota-member", user_option, opt("chars_per_day", 20, INTEGER))]
    generate = [opt("model", "alpha"), opt("prompt", "A"), opt("length", 100, INTEGER)]
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        refused = await fake.slash("admin", limit, member=plain, resolved=resolved)
        elsewhere = await fake.slash(
            "admin", limit, member=role_holder, resolved=resolved, guild_id=FakeDiscord.OTHER_GUILD_ID
        )
        by_role = await fake.slash("admin", limit, member=role_holder, resolved=resolved)
        asked = (refused, elsewhere, by_role)
        await fake.wait_for(lambda: all(ephemeral_text(fake, i.token) for i in asked))
        in_a = await fake.slash("generate", generate)
        await fake.wait_for(lambda: finished(fake, in_a))
        again_in_a = await fake.slash("generate", generate)
        await fake.wait_for(lambda: ephemeral_text(fake, again_in_a.token))
        in_b = await fake.slash("generate", generate, guild_id=FakeDiscord.OTHER_GUILD_ID)
        await fake.wait_for(lambda: finished(fake, in_b))
        rows = await service.history(user_id=ALICE_ID)
    needed = f"/admin quota-member needs Manage Server or the <@&{FakeDiscord.ADMIN_ROLE_ID}> role in this server."
    assert ephemeral_text(fake, refused.token) == needed
    assert ephemeral_text(fake, elsewhere.token) == needed  # the role is server A's; it means nothing in B
    assert ephemeral_text(fake, by_role.token).startswith(f"Quota of <@{ALICE_ID}> in this server: chars_per_day 20")
    by_guild = {r.guild_id: r.chars for r in rows}
    assert by_guild == {FakeDiscord.GUILD_ID: 20, FakeDiscord.OTHER_GUILD_ID: 100}  # capped in A only
    assert "used its 20 characters for today" in ephemeral_text(fake, again_in_a.token)


async def test_quotas_persist_across_a_bot_restart(discord_env: None) -> None:
    admin = OWNER
    user = {"id": "300000000000000001", "username": "alice", "discriminator": "0", "global_name": "alice"}
    quota = {
        "type": SUBCOMMAND,
        "name": "quota-user",
        "options": [
            opt("user", user["id"], 6),
            opt("chars_per_day", 40, INTEGER),
            opt("cooldown_s", 0, 10),
        ],
    }
    resolved = {"users": {user["id"]: {**user, "avatar": None}}}
    generate = [opt("model", "alpha"), opt("prompt", "A"), opt("length", 100, INTEGER)]
    async with FakeDiscord() as fake:
        async with opened_service() as service, running_bot(fake, service):
            sent = await fake.slash("admin", [quota], member=admin, resolved=resolved)
            await fake.wait_for(lambda: ephemeral_text(fake, sent.token))
            first = await fake.slash("generate", generate)
            await fake.wait_for(lambda: finished(fake, first), timeout=15)
        async with opened_service() as service, running_bot(fake, service):
            again = await fake.slash("generate", generate)
            await fake.wait_for(lambda: ephemeral_text(fake, again.token))
            rows = await service.history(user_id=user["id"])
    assert "quota" in ephemeral_text(fake, sent.token).lower()
    assert len(rows) == 1 and rows[0].chars == 40  # capped at what was left of the day's quota
    refusal = ephemeral_text(fake, again.token)
    assert "used its 40 characters for today" in refusal and "try again" in refusal


# ----- sharding --------------------------------------------------------------------------------


def _guilds(bot: GenbotBot) -> set[str]:
    """The servers a bot's shards received (GUILD_CREATE)."""
    return {str(guild.id) for guild in bot.guilds}


async def test_two_processes_on_two_shards_spend_one_daily_quota(
    discord_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two services on one database, each with its own bot running one of the application's two
    # shards, as two `genbot discord` processes with shard_ids [0] and [1] would.
    monkeypatch.setenv("GENBOT_DISCORD__QUOTAS__USER_CHARS_PER_DAY", "60")
    monkeypatch.setenv("GENBOT_DISCORD__QUOTAS__USER_COOLDOWN_S", "0")
    generate = [opt("model", "alpha"), opt("prompt", "A"), opt("length", 40, INTEGER)]
    other = FakeDiscord.OTHER_GUILD_ID
    fake = FakeDiscord(shard_count=2, max_concurrency=2)
    async with fake, opened_service() as first, opened_service() as second:
        async with running_bot(fake, first, (2, [0])) as bot0, running_bot(fake, second, (2, [1])) as bot1:
            await fake.wait_ready()
            on_shard0 = await fake.slash("generate", generate)
            await fake.wait_for(lambda: finished(fake, on_shard0), timeout=15)
            on_shard1 = await fake.slash("generate", generate, guild_id=other)
            await fake.wait_for(lambda: finished(fake, on_shard1), timeout=15)
            refused = await fake.slash("generate", generate)
            await fake.wait_for(lambda: ephemeral_text(fake, refused.token))
            identified = {sid: shard.count for sid, shard in fake.shards.items()}
            guilds = (_guilds(bot0), _guilds(bot1))
        rows = await first.history(user_id=ALICE_ID)
    assert FakeDiscord.shard_of(FakeDiscord.GUILD_ID, 2) == 0 and FakeDiscord.shard_of(other, 2) == 1
    assert identified == {0: 2, 1: 2}
    assert guilds == ({FakeDiscord.GUILD_ID}, {other})  # each process saw only its shard's server
    by_guild = {r.guild_id: r.chars for r in rows}
    assert by_guild == {FakeDiscord.GUILD_ID: 40, other: 20}  # shard 1 had only 20 of the 60 left
    assert "used its 60 characters for today" in ephemeral_text(fake, refused.token)


async def test_one_process_runs_every_shard_discord_recommends(discord_env: None) -> None:
    # No [discord] shard settings: the bot asks GET /gateway/bot and runs both shards itself,
    # identifying them the 5 s apart that Discord's identify limit asks (no Invalid Session).
    async with FakeDiscord(shard_count=2) as fake, opened_service() as service, running_bot(fake, service) as bot:
        await fake.wait_ready(timeout=20)
        answers = [await fake.slash("history", guild_id=g) for g in (FakeDiscord.GUILD_ID, FakeDiscord.OTHER_GUILD_ID)]
        await fake.wait_for(lambda: all(ephemeral_text(fake, i.token) for i in answers))
        identified = {sid: shard.count for sid, shard in fake.shards.items()}
        assert (bot.shard_count, sorted(bot.shards)) == (2, [0, 1])
        assert _guilds(bot) == {FakeDiscord.GUILD_ID, FakeDiscord.OTHER_GUILD_ID}
    assert identified == {0: 2, 1: 2}
    assert all("no stored generations" in ephemeral_text(fake, i.token) for i in answers)


async def test_the_fake_gateway_refuses_a_bad_shard_and_an_identify_too_soon() -> None:
    # What Discord answers a client breaking the gateway's rules: 4010 for a shard outside its
    # count, op 9 Invalid Session for a second IDENTIFY of one rate-limit key within 5 s.
    import aiohttp

    def identify(shard: list[int]) -> dict[str, Any]:
        return {"op": 2, "d": {"token": FakeDiscord.TOKEN, "intents": 0, "properties": {}, "shard": shard}}

    async with FakeDiscord(shard_count=2) as fake, aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{fake.port}/gateway"
        async with http.ws_connect(url) as bad:
            assert (await bad.receive_json())["op"] == 10  # HELLO
            await bad.send_json(identify([2, 2]))
            closed = await bad.receive()
            assert (closed.type, bad.close_code) == (aiohttp.WSMsgType.CLOSE, 4010)
        async with http.ws_connect(url) as first, http.ws_connect(url) as second:
            await first.receive_json(), await second.receive_json()
            await first.send_json(identify([0, 2]))
            ready = await first.receive_json()
            await second.send_json(identify([1, 2]))
            too_soon = await second.receive_json()
    assert (ready["t"], ready["d"]["shard"], [g["id"] for g in ready["d"]["guilds"]]) == (
        "READY",
        [0, 2],
        [FakeDiscord.GUILD_ID],
    )
    assert too_soon == {"op": 9, "d": False, "s": None, "t": None}


def test_shard_ids_outside_the_shard_count_are_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_DISCORD__SHARD_COUNT", "2")
    monkeypatch.setenv("GENBOT_DISCORD__SHARD_IDS", "[1, 2]")
    with pytest.raises(ConfigError, match=r"shard_ids \[2\] outside 0..1"):
        load_settings()
    monkeypatch.delenv("GENBOT_DISCORD__SHARD_COUNT")
    monkeypatch.setenv("GENBOT_DISCORD__SHARD_IDS", "[0]")
    with pytest.raises(ConfigError, match=r"shard_ids needs discord\.shard_count"):
        load_settings()


# ----- corpora and retraining from chat --------------------------------------------------------


async def test_a_corpus_upload_and_a_retrain_run_end_to_end(
    discord_env: None, corpus_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_VERSIONS__AUTO_ACTIVATE", "always")  # v2 goes live whatever its loss
    admin = OWNER
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        bad = fake.attachment("notes.pdf", b"%PDF-1.4", "application/pdf")
        options, resolved = _upload("pdfs", bad)
        refused = await fake.slash("admin", options, resolved=resolved, member=admin)
        good = fake.attachment("plays.txt", corpus_text.encode())
        options, resolved = _upload("uploaded", good)
        added = await fake.slash("admin", options, resolved=resolved, member=admin)
        await fake.wait_for(lambda: ephemeral_text(fake, refused.token) and ephemeral_text(fake, added.token))
        retrain = [opt("model", "alpha"), opt("corpus", "uploaded"), opt("steps", 5, INTEGER)]
        queued = await fake.slash("admin", [{"type": SUBCOMMAND, "name": "retrain", "options": retrain}], member=admin)
        status = await fake.wait_for(lambda: _channel_message(fake, "**Job #"))
        await service.jobs.worker().run(once=True)
        result = await fake.wait_for(lambda: _channel_message(fake, "finished: alpha v2"), timeout=40)
        corpus = await service.corpora.get("uploaded")
        await fake.slash("admin", [{"type": SUBCOMMAND, "name": "retrain", "options": retrain}], member=admin)
        await fake.wait_for(lambda: _channel_message(fake, "**Job #2**"))
        Path((await service.jobs.get(2)).args["corpus_path"]).write_bytes(b"\x00\x01binary")  # spoiled after queueing
        await service.jobs.worker().run(once=True)
        failed = await fake.wait_for(lambda: _channel_message(fake, "failed: "), timeout=20)
        jobs = await fake.slash("jobs")
        rollback = await fake.slash("admin", [_sub("rollback", opt("model", "alpha"))], member=admin)
        await fake.wait_for(lambda: ephemeral_text(fake, rollback.token))
        activate = await fake.slash(
            "admin", [_sub("activate", opt("model", "alpha"), opt("version", 2, INTEGER))], member=admin
        )
        await fake.wait_for(lambda: ephemeral_text(fake, jobs.token) and ephemeral_text(fake, activate.token))
    assert "only .txt files" in ephemeral_text(fake, refused.token)
    assert "Corpus `uploaded` registered" in ephemeral_text(fake, added.token) and corpus.size_bytes == len(corpus_text)
    assert "Queued job #" in str(callbacks(fake, queued.token)[0]["data"])
    assert "succeeded" in status.content and "new version: v2" in status.content
    assert result.files == ["loss.png"] and "was not activated" not in result.content  # sampled from v2
    assert "**Job #2** · alpha on `uploaded` · **failed**" in failed.content and "binary" in failed.content
    assert_paced(status, 1.0)
    listed = ephemeral_text(fake, jobs.token)
    assert "`#2` alpha on uploaded: failed" in listed and "`#1` alpha on uploaded: succeeded" in listed
    assert ephemeral_text(fake, rollback.token) == "alpha rolled back to v1."
    assert ephemeral_text(fake, activate.token) == "alpha v2 is now active."


async def test_a_retrain_asks_for_processes_within_the_configured_cap(
    discord_env: None, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_JOBS__MAX_NPROC", "4")
    base = [opt("model", "alpha"), opt("corpus", "plays"), opt("steps", 5, INTEGER)]
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        await service.corpora.add("plays", [corpus_file])
        # Discord's client enforces an option's range, but anyone can post an interaction by hand.
        absurd = await fake.slash("admin", [_sub("retrain", *base, opt("nproc", 10_000, INTEGER))], member=OWNER)
        over = await fake.slash("admin", [_sub("retrain", *base, opt("nproc", 5, INTEGER))], member=OWNER)
        await fake.wait_for(lambda: ephemeral_text(fake, absurd.token) and ephemeral_text(fake, over.token))
        refused = await service.jobs.list()
        queued = await fake.slash("admin", [_sub("retrain", *base, opt("nproc", 4, INTEGER))], member=OWNER)
        # one after the other: two interactions in flight at once may queue their jobs in either order
        await fake.wait_for(lambda: callbacks(fake, queued.token))
        default = await fake.slash("admin", [_sub("retrain", *base)], member=OWNER)
        await fake.wait_for(lambda: callbacks(fake, default.token))
        jobs = await service.jobs.list()
    assert refused == []
    assert ephemeral_text(fake, absurd.token).startswith(
        "--nproc must be between 1 and 4 ([jobs] max_nproc), got 10000"
    )
    assert "between 1 and 4" in ephemeral_text(fake, over.token)
    assert "Queued job #" in str(callbacks(fake, queued.token)[0]["data"])
    assert [j.args["options"] for j in reversed(jobs)] == [{"nproc": 4}, {}]  # none given: the worker's [jobs] nproc


def _sub(name: str, *options: dict[str, object]) -> dict[str, object]:
    """A subcommand option of a command group."""
    return {"type": SUBCOMMAND, "name": name, "options": list(options)}


def _upload(name: str, attachment: dict[str, object]) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Options and resolved data of ``/admin corpus-add name file``."""
    options = [opt("name", name), opt("file", attachment["id"], ATTACHMENT)]
    return [{"type": SUBCOMMAND, "name": "corpus-add", "options": options}], {
        "attachments": {attachment["id"]: attachment}
    }


def _channel_message(fake: FakeDiscord, text: str) -> FakeMessage | None:
    """A message posted in the channel (not through an interaction) that contains ``text``."""
    posted = {c.body["id"] for c in fake.calls_to("POST", r"/channels/\d+/messages$") if c.body}
    return next((m for i, m in fake.messages.items() if i in posted and text in m.content), None)


# ----- other commands, the mention trigger, start-up -------------------------------------------


async def test_models_history_and_forget_me(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        models = await fake.slash("models")
        first = await fake.slash("generate", [opt("model", "alpha"), opt("prompt", "A"), opt("length", 30, INTEGER)])
        await fake.wait_for(lambda: callbacks(fake, models.token) and finished(fake, first))
        history = await fake.slash("history")
        await fake.wait_for(lambda: ephemeral_text(fake, history.token))
        forget = await fake.slash("forget-me")
        await fake.wait_for(lambda: ephemeral_text(fake, forget.token))
        left = await service.history(user_id="300000000000000001")
    embeds = callbacks(fake, models.token)[0]["data"]["embeds"]  # type: ignore[index]
    assert {"alpha v1", "beta v1", "slowc v1"} <= {e["title"] for e in embeds}
    assert "**alpha** completed · 30 chars" in ephemeral_text(fake, history.token)
    assert ephemeral_text(fake, forget.token) == "Deleted 1 stored generation(s)." and left == []


async def test_the_mention_trigger_answers_in_the_channel(discord_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_DISCORD__MENTION_TRIGGER", "true")
    monkeypatch.setenv("GENBOT_DISCORD__MENTION_MODEL", "alpha")
    author = FakeDiscord.member("300000000000000003", "carol")
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        bot_user = {"id": FakeDiscord.APP_ID, "username": "genbot", "discriminator": "0", "bot": True, "avatar": None}
        await fake.post_message(f"<@{FakeDiscord.APP_ID}> ROMEO:", author=author, mentions=[bot_user])
        reply = await fake.wait_for(lambda: _channel_message(fake, "chars/s"), timeout=15)
        rows = await service.history(user_id="300000000000000003")
    assert reply.content.startswith("ROMEO:") and "alpha v1" in reply.content
    assert rows[0].prompt == "ROMEO:" and rows[0].channel_id == FakeDiscord.CHANNEL_ID


async def test_genbot_serve_runs_the_bot_when_a_token_is_set(
    discord_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from genbot.frontends.cli.serve import _serve

    monkeypatch.setenv("DISCORD_TOKEN", FakeDiscord.TOKEN)
    async with FakeDiscord() as fake:
        serving = asyncio.create_task(_serve(load_settings(), False, False))
        await fake.wait_ready(timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)  # what Ctrl-C / a service manager does; serve stops cleanly
        await asyncio.wait_for(serving, 30)
    identify = fake.calls_to("GET", r"/users/@me$")
    assert identify and not fake.calls_to("PUT", r"/applications/")  # starting does not sync the commands


def test_genbot_discord_without_a_token_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from genbot.frontends.cli import app

    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["discord"])
    assert result.exit_code == 2
    assert "set the DISCORD_TOKEN environment variable" in result.output


async def test_commands_sync_with_descriptions_autocomplete_and_errors_after_the_deferral(
    discord_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_SAMPLING__MAX_PROMPT_CHARS", "5")
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service) as bot:
        typed = await fake.autocomplete("generate", [{**opt("model", "slo"), "focused": True}, opt("prompt", "")])
        too_long = await fake.slash("generate", [opt("model", "alpha"), opt("prompt", "hello world")])
        await fake.wait_for(lambda: callbacks(fake, typed.token) and ephemeral_text(fake, too_long.token))
        synced = await synced_commands(fake, bot)
    commands = {c["name"]: c for c in synced}
    assert {"generate", "models", "history", "forget-me", "jobs", "admin"} <= set(commands)
    generate = commands["generate"]
    assert generate["description"].startswith("Generate text with a char-RNN model")
    options = {o["name"]: o for o in generate["options"]}
    assert options["model"]["autocomplete"] and options["prompt"]["description"] == "text the model continues"
    admin = {o["name"] for o in commands["admin"]["options"]}
    assert {"corpus-add", "retrain", "activate", "rollback", "quota-user", "quota-guild", "cancel"} <= admin
    assert "quota-member" in admin
    # Hidden from members without Manage Server by default; not offered in DMs.
    assert int(commands["admin"]["default_member_permissions"]) == 32 and commands["admin"]["dm_permission"] is False
    answer = callbacks(fake, typed.token)[0]
    assert answer["type"] == 8 and sorted(c["value"] for c in answer["data"]["choices"]) == ["slow", "slowc"]  # type: ignore[index]
    assert "the prompt has 11 characters; the limit is 5" in ephemeral_text(fake, too_long.token)
    assert fake.calls_to("DELETE", rf"/{too_long.token}/messages/@original$")  # no public "thinking…" left


def test_a_fence_in_the_output_stays_inside_ours() -> None:
    from genbot.frontends.discord.streaming import render

    content = render("a ``` b", "c", "-# footer")
    assert content.startswith("```c\n") and content.count("```") == 2 and content.endswith("```\n-# footer")


# ----- /inspect ---------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def test_inspect_defers_then_uploads_the_png_with_a_summary(discord_env: None, corpus_text: str) -> None:
    text = corpus_text[:600]
    options = [opt("model", "alpha"), opt("text", text), opt("find", "line-position")]
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service) as bot:
        sent = await fake.slash("inspect", options)
        reply = await fake.wait_for(lambda: fake.followups(sent), timeout=30)
        synced = await synced_commands(fake, bot)
    assert callbacks(fake, sent.token)[0]["type"] == 5  # deferred first: tracing takes a while
    [upload] = fake.calls_to("POST", rf"/webhooks/\d+/{sent.token}$")
    [(name, png)] = upload.uploads.items()
    assert name.startswith("alpha-L") and name.endswith(".png") and png.startswith(PNG_SIGNATURE)
    content = reply[0].content
    assert len(content) <= 2000 and not upload.body.get("flags", 0) & 64
    assert "units tracking line-position" in content and "showing layer" in content and "(found)" in content
    inspect = {c["name"]: c for c in synced}["inspect"]
    options_synced = {o["name"]: o for o in inspect["options"]}
    assert options_synced["text"]["max_length"] == 2000 and options_synced["model"]["autocomplete"]
    assert {c["value"] for c in options_synced["find"]["choices"]} >= {"quotes", "bracket-depth", "comment"}


async def test_inspect_errors_are_ephemeral_and_leave_no_thinking_reply(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service) as bot:
        bad_unit = await fake.slash("inspect", [opt("model", "alpha"), opt("text", "ROMEO: hi"), opt("unit", 999, 4)])
        unknown = await fake.slash("inspect", [opt("model", "nope"), opt("text", "ROMEO: hi")])
        too_long = await fake.slash("inspect", [opt("model", "alpha"), opt("text", "a" * 2001)])
        asked = (bad_unit, unknown, too_long)
        await fake.wait_for(lambda: all(ephemeral_text(fake, i.token) for i in asked))
        cog = bot.get_cog("InspectCommands")
        assert isinstance(cog, InspectCommands)
        for _ in range(MAX_INSPECTIONS):  # every slot taken: the next one is refused, not queued
            await cog.slots.acquire()
        busy = await fake.slash("inspect", [opt("model", "alpha"), opt("text", "ROMEO: hi")])
        await fake.wait_for(lambda: ephemeral_text(fake, busy.token))
    assert "inspections are running" in ephemeral_text(fake, busy.token)
    assert "unit must be 0..31 for this model, got 999" in ephemeral_text(fake, bad_unit.token)
    assert fake.calls_to("DELETE", rf"/{bad_unit.token}/messages/@original$")  # no public "thinking…" left
    assert "unknown model 'nope'" in ephemeral_text(fake, unknown.token)
    assert "reads at most 2,000" in ephemeral_text(fake, too_long.token)
    assert not any(c.uploads for c in fake.calls)


# ----- /caption ---------------------------------------------------------------------------------


@pytest.fixture
def with_captioner(discord_env: None, plugins_dir: Path) -> None:
    """The bundled captioner beside alpha and beta."""
    shutil.copytree(bundled_plugins_dir() / "captioner", plugins_dir / "captioner")


def _caption_options(
    attachment: dict[str, object], *more: dict[str, object]
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Options and resolved data of ``/caption image …``."""
    return [opt("image", attachment["id"], ATTACHMENT), *more], {"attachments": {attachment["id"]: attachment}}


async def test_caption_replies_with_the_top_captions_and_stores_the_row(with_captioner: None) -> None:
    scene = io.BytesIO()
    render_scene(HELD_OUT_SEED + 5, 64).image.save(scene, "PNG")
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        options, resolved = _caption_options(fake.attachment("scene.png", scene.getvalue(), "image/png"))
        sent = await fake.slash("caption", options, resolved=resolved)
        reply = await fake.wait_for(lambda: fake.followups(sent), timeout=30)
        [row] = await service.history(user_id="300000000000000001")
    assert callbacks(fake, sent.token)[0]["type"] == 5
    content = reply[0].content
    best, block, footer = content.split("\n", 1)[0], content.split("```")[1], content.rsplit("\n", 1)[-1]
    assert best == f"**{row.output}**" and row.output and row.frontend == "discord"
    lines = block.strip().splitlines()
    assert len(lines) == 3 and lines[0].split(None, 1)[1] == row.output
    logprobs = [float(line.split()[0]) for line in lines]
    assert logprobs == sorted(logprobs, reverse=True) and all(lp < 0 for lp in logprobs)
    assert footer.startswith("-# captioner v1 · beam 3 · <image sha256:") and "64x64>" in footer
    assert row.channel_id == FakeDiscord.CHANNEL_ID and row.prompt.startswith("<image sha256:")


async def test_caption_refuses_non_images_and_text_models_ephemerally(with_captioner: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        options, resolved = _caption_options(fake.attachment("notes.txt", b"not a picture at all"))
        not_image = await fake.slash("caption", options, resolved=resolved)
        options, resolved = _caption_options(fake.attachment("b.png", b"\x89PNG"), opt("model", "alpha"))
        text_model = await fake.slash("caption", options, resolved=resolved)
        inspect_captioner = await fake.slash("inspect", [opt("model", "captioner"), opt("text", "a red circle")])
        asked = (not_image, text_model, inspect_captioner)
        await fake.wait_for(lambda: all(ephemeral_text(fake, i.token) for i in asked))
        rows = await service.history()
    assert "not an image" in ephemeral_text(fake, not_image.token)
    assert fake.calls_to("DELETE", rf"/{not_image.token}/messages/@original$")  # no public "thinking…" left
    assert "'alpha' generates text, not captions" in ephemeral_text(fake, text_model.token)
    assert "'captioner' describes images" in ephemeral_text(fake, inspect_captioner.token)
    assert rows == []  # nothing stored for refused requests


async def test_caption_is_charged_to_the_quotas(with_captioner: None) -> None:
    scene = io.BytesIO()
    render_scene(HELD_OUT_SEED + 5, 64).image.save(scene, "PNG")
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        options, resolved = _caption_options(fake.attachment("scene.png", scene.getvalue(), "image/png"))
        first = await fake.slash("caption", options, resolved=resolved)
        await fake.wait_for(lambda: fake.followups(first), timeout=30)
        second = await fake.slash("caption", options, resolved=resolved)  # within the 3 s user cooldown
        await fake.wait_for(lambda: ephemeral_text(fake, second.token))
        [row] = await service.history(user_id=ALICE_ID)
        used = await service.quotas.usage("user", ALICE_ID)
        in_guild = await service.quotas.usage("guild", FakeDiscord.GUILD_ID)
    assert used.chars == len(row.output) > 0 and used.requests == 1
    assert in_guild.chars == len(row.output)
    assert "cooling down" in ephemeral_text(fake, second.token)
    assert callbacks(fake, second.token)[0]["type"] == 4  # refused before any public "thinking…"


# ----- the fake enforces Discord's rules --------------------------------------------------------


async def test_the_fake_refuses_a_second_initial_response_long_content_and_fast_edits(discord_env: None) -> None:
    import aiohttp
    import discord

    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service) as bot:
        sent = await fake.slash("history")
        await fake.wait_for(lambda: callbacks(fake, sent.token))
        url = f"{fake.base}/api/v10/interactions/{sent.id}/{sent.token}/callback"
        async with aiohttp.ClientSession() as http, http.post(url, json={"type": 5}) as again:
            status, error, headers = again.status, await again.json(), again.headers
        channel = bot.get_partial_messageable(int(FakeDiscord.CHANNEL_ID))
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        message = await channel.send("x" * 2000)
        await message.edit(content="y")
        await message.edit(content="z")  # right after the previous edit: too fast
        violations = fake.take_violations()
    assert status == 400 and error["code"] == 40060 and "already been acknowledged" in error["message"]
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset-After", "X-RateLimit-Bucket"} <= set(
        headers
    )
    assert too_long.value.status == 400 and too_long.value.code == 50035
    assert [v.code for v in violations] == [40060, 50035, 0]
    assert "after the previous edit" in violations[2].detail


async def test_an_expired_interaction_token_stops_the_reply(discord_env: None) -> None:
    clock = FakeClock()
    async with FakeDiscord(clock=clock) as fake, opened_service() as service, running_bot(fake, service):
        sent = await fake.slash("generate", [opt("model", "slow"), opt("prompt", "x"), opt("length", 5000, INTEGER)])
        await fake.wait_for(lambda: (m := fake.original(sent)) and m.edits)
        clock.advance(15 * 60 + 1)  # the token's 15 minutes are up
        await fake.wait_for(lambda: any(c.status == 404 for c in fake.calls_to("PATCH", sent.token)))
        row = await finished_row(service, ALICE_ID)
        violations = fake.take_violations()
    assert row.status == "cancelled" and len(row.output) < 5000  # the generation stopped, not run on unseen
    assert violations and {v.code for v in violations} == {10015}


async def finished_row(service: GenbotService, user_id: str) -> Any:
    """The user's latest stored generation once it is no longer running."""
    for _ in range(1000):
        rows = await service.history(user_id=user_id)
        if rows and rows[0].status != "running":
            return rows[0]
        await asyncio.sleep(0.02)
    raise TimeoutError("the generation did not finish")


async def test_the_rate_limit_headers_pace_the_real_client(discord_env: None) -> None:
    fake = FakeDiscord(bucket_limit=2, bucket_window_s=0.5)
    async with fake, opened_service() as service, running_bot(fake, service) as bot:
        channel = bot.get_partial_messageable(int(FakeDiscord.CHANNEL_ID))
        for i in range(5):
            await channel.send(f"message {i}")
    posts = fake.calls_to("POST", r"/channels/\d+/messages$")
    assert [c.status for c in posts] == [200] * 5  # discord.py waited for the reset instead of getting 429s
    assert posts[2].at - posts[0].at >= 0.4  # the third had to wait for the bucket's window to reset


def test_genbot_discord_sync_registers_the_commands_once(discord_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from genbot.frontends.cli import app

    monkeypatch.setenv("DISCORD_TOKEN", FakeDiscord.TOKEN)

    async def sync(env: dict[str, str]) -> tuple[FakeDiscord, Any]:
        async with FakeDiscord() as fake:
            result = await asyncio.to_thread(CliRunner().invoke, app, ["discord", "sync"], env=env)
        return fake, result

    fake, result = asyncio.run(sync({}))
    assert result.exit_code == 0, result.output
    [put] = fake.calls_to("PUT", r"/applications/")
    assert put.path == f"/applications/{FakeDiscord.APP_ID}/commands"
    assert f"synced {len(put.body)} commands globally" in result.output
    assert "admin" in {c["name"] for c in put.body} and not fake.calls_to("GET", r"/gateway")  # no gateway session
    fake, result = asyncio.run(sync({"GENBOT_DISCORD__GUILD_IDS": f"[{FakeDiscord.GUILD_ID}]"}))
    assert result.exit_code == 0, result.output
    [put] = fake.calls_to("PUT", r"/applications/")
    assert put.path == f"/applications/{FakeDiscord.APP_ID}/guilds/{FakeDiscord.GUILD_ID}/commands"
    assert f"commands to server {FakeDiscord.GUILD_ID}" in result.output

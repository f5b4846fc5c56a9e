"""Continue and Again buttons under finished replies, and /preset, with the real discord.py client on the fake Discord.

A real ``GenbotService`` on a real SQLite file serves the ``plugins_dir`` models; the buttons'
custom ids carry the generation id, so a reply sent by an earlier bot process still works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from genbot.service import Identity
from genbot.testing.fake_discord import BOOLEAN, INTEGER, NUMBER, SUBCOMMAND, FakeDiscord
from tests.helpers import (
    OWNER,
    buttons,
    callbacks,
    ephemeral_text,
    finished,
    opened_service,
    opt,
    pages_of,
    running_bot,
    statements_on,
)

ALICE = "300000000000000001"
BOB = FakeDiscord.member("300000000000000002", "bob")


@pytest.fixture
def discord_env(plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``plugins_dir`` models (alpha, beta); no cooldown between a user's requests."""
    monkeypatch.setenv("GENBOT_DISCORD__QUOTAS__USER_COOLDOWN_S", "0")


async def test_a_button_press_is_a_request_under_the_users_quotas(
    discord_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_DISCORD__QUOTAS__USER_COOLDOWN_S", "600")
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        sent = await fake.slash("generate", [opt("model", "alpha"), opt("prompt", "A"), opt("length", 10, INTEGER)])
        await fake.wait_for(lambda: finished(fake, sent), timeout=20)
        reply = pages_of(fake, sent)[0]
        pressed = await fake.click(buttons(reply)["Continue"], reply.id)
        await fake.wait_for(lambda: ephemeral_text(fake, pressed.token))
        rows = await service.history(user_id=ALICE)
    assert "cooling down" in ephemeral_text(fake, pressed.token)
    assert len(rows) == 1  # refused before anything was stored


async def test_continue_and_again_buttons_work_after_a_restart_for_the_requester_only(discord_env: None) -> None:
    async with FakeDiscord() as fake:
        async with opened_service() as service, running_bot(fake, service):
            sent = await fake.slash(
                "generate", [opt("model", "alpha"), opt("prompt", "ROMEO:"), opt("length", 30, INTEGER)]
            )
            await fake.wait_for(lambda: finished(fake, sent), timeout=20)
            reply = pages_of(fake, sent)[0]
            [root] = await service.history(user_id=ALICE)
        assert set(buttons(reply)) == {"Continue", "Again"}
        assert buttons(reply)["Continue"] == f"genbot:continue:{root.id}"
        # A new process: the buttons of the old reply still work.
        async with opened_service() as service, running_bot(fake, service):
            refused = await fake.click(buttons(reply)["Continue"], reply.id, member=BOB)
            await fake.wait_for(lambda: callbacks(fake, refused.token))
            pressed = await fake.click(buttons(reply)["Continue"], reply.id)
            await fake.wait_for(lambda: finished(fake, pressed), timeout=20)
            again = await fake.click(buttons(reply)["Again"], reply.id)
            await fake.wait_for(lambda: finished(fake, again), timeout=20)
            rows = await service.history(user_id=ALICE)
            bobs = await service.history(user_id=BOB["user"]["id"])
    assert "Only the person who asked" in ephemeral_text(fake, refused.token)
    assert root.output not in ephemeral_text(fake, refused.token)
    assert bobs == []
    again_row, child, _ = rows
    assert child.parent_id == root.id and child.prompt == "ROMEO:" + root.output
    assert child.output in pages_of(fake, pressed)[0].content
    assert (again_row.prompt, again_row.parent_id, again_row.max_length) == ("ROMEO:", None, 30)
    assert again_row.seed != root.seed
    assert buttons(pages_of(fake, pressed)[0])["Continue"] == f"genbot:continue:{child.id}"  # the thread goes on


async def test_a_long_reply_carries_its_buttons_under_the_last_page(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        sent = await fake.slash("generate", [opt("model", "slow"), opt("prompt", "x"), opt("length", 2500, INTEGER)])
        await fake.wait_for(lambda: finished(fake, sent), timeout=30)
        pages = pages_of(fake, sent)
        last = pages[-1]
        pressed = await fake.click(buttons(last)["Again"], last.id)
        await fake.wait_for(lambda: finished(fake, pressed), timeout=30)
        again, root = await service.history(user_id=ALICE)
    assert len(pages) >= 2  # 2,500 characters do not fit one message
    assert [set(buttons(page)) for page in pages] == [set()] * (len(pages) - 1) + [{"Continue", "Again"}]
    assert buttons(last)["Continue"] == f"genbot:continue:{root.id}" and "chars/s" in last.content  # with the footer
    assert (again.prompt, again.max_length) == ("x", 2500)
    assert set(buttons(pages_of(fake, pressed)[-1])) == {"Continue", "Again"}


async def test_an_owner_may_continue_anyones_reply(discord_env: None) -> None:
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        sent = await fake.slash(
            "generate", [opt("model", "beta"), opt("prompt", "JULIET:"), opt("length", 10, INTEGER)]
        )
        await fake.wait_for(lambda: finished(fake, sent), timeout=20)
        reply = pages_of(fake, sent)[0]
        pressed = await fake.click(buttons(reply)["Continue"], reply.id, member=OWNER)
        await fake.wait_for(lambda: finished(fake, pressed), timeout=20)
        [child, root] = await service.history(model="beta")
    assert child.parent_id == root.id and child.user_id == OWNER["user"]["id"]


async def test_preset_save_use_list_and_delete(discord_env: None) -> None:
    saved_opts = [opt("name", "calm"), opt("model", "beta"), opt("temperature", 0.3, NUMBER)]
    saved_opts += [opt("length", 12, INTEGER), opt("seed", 5, INTEGER)]
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        save = await fake.slash("preset", [{"name": "save", "type": SUBCOMMAND, "options": saved_opts}])
        await fake.wait_for(lambda: callbacks(fake, save.token))
        uses = []
        for _ in range(2):
            with statements_on(service, "presets") as reads:
                use = await fake.slash(
                    "preset", [{"name": "use", "type": SUBCOMMAND, "options": [opt("name", "calm")]}]
                )
                await fake.wait_for(lambda u=use: finished(fake, u), timeout=20)  # type: ignore[misc]
            uses.append(use)
            assert len(reads) == 1, reads  # the preset is read once per use: what was admitted is what runs
        bob_use = await fake.slash(
            "preset", [{"name": "use", "type": SUBCOMMAND, "options": [opt("name", "calm")]}], member=BOB
        )
        await fake.wait_for(lambda: ephemeral_text(fake, bob_use.token))
        listed = await fake.slash("preset", [{"name": "list", "type": 1}])
        await fake.wait_for(lambda: callbacks(fake, listed.token))
        not_owner = await fake.slash(
            "preset",
            [{"name": "save", "type": SUBCOMMAND, "options": [opt("name", "house"), opt("global", True, BOOLEAN)]}],
        )
        await fake.wait_for(lambda: ephemeral_text(fake, not_owner.token))
        hostile = await fake.slash("preset", [{"name": "save", "type": SUBCOMMAND, "options": [opt("name", "../etc")]}])
        await fake.wait_for(lambda: ephemeral_text(fake, hostile.token))
        delete = await fake.slash("preset", [{"name": "delete", "type": SUBCOMMAND, "options": [opt("name", "calm")]}])
        await fake.wait_for(lambda: callbacks(fake, delete.token))
        rows = await service.history(user_id=ALICE)
        left = await service.presets.list(Identity("discord", user_id=ALICE).preset_owner)
    assert "Saved preset `calm`" in ephemeral_text(fake, save.token)
    assert [(r.model, r.temperature, r.seed, r.max_length) for r in rows] == [("beta", 0.3, 5, 12)] * 2
    assert rows[0].output == rows[1].output  # a preset with a seed gives the same text each time
    assert "no preset named 'calm'" in ephemeral_text(fake, bob_use.token)
    assert "`calm`" in ephemeral_text(fake, listed.token)
    assert "only the bot's owners" in ephemeral_text(fake, not_owner.token)
    assert "preset name '../etc'" in ephemeral_text(fake, hostile.token)
    assert "Deleted preset `calm`" in ephemeral_text(fake, delete.token)
    assert left == []


async def test_a_mention_reply_has_the_buttons_too(discord_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_DISCORD__MENTION_TRIGGER", "true")
    monkeypatch.setenv("GENBOT_DISCORD__MENTION_MODEL", "alpha")
    carol = FakeDiscord.member("300000000000000003", "carol")
    bot_user = {"id": FakeDiscord.APP_ID, "username": "genbot", "discriminator": "0", "bot": True, "avatar": None}
    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        await fake.post_message(f"<@{FakeDiscord.APP_ID}> ROMEO:", author=carol, mentions=[bot_user])
        reply = await fake.wait_for(
            lambda: next((m for m in fake.messages.values() if "Continue" in buttons(m)), None), timeout=20
        )
        pressed = await fake.click(buttons(reply)["Continue"], reply.id, member=carol)
        await fake.wait_for(lambda: finished(fake, pressed), timeout=30)
        child, root = await service.history(user_id="300000000000000003")
    assert child.parent_id == root.id and child.prompt.endswith(root.output)

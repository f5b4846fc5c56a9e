"""Continuations, threads, presets and chat templates over HTTP, against a real uvicorn server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from genbot.errors import CheckpointError
from genbot.networks.card import ModelCard
from genbot.service import GenbotService
from tests.helpers import api_server, client, parse_sse, statements_on, write_model_folder

PLAY = "{name}:\n{text}\n\n"


@pytest.fixture
async def api(
    plugins_dir: Path, corpus_text: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, GenbotService, dict[str, str]]]:
    """A server over alpha, beta and ``play`` (a chat template), with keys for alice, bob and an admin."""
    write_model_folder(plugins_dir, "play", corpus_text + "{}", seed=3, chat_template=PLAY)
    monkeypatch.setenv("GENBOT_SAMPLING__CONTEXT_CHARS", "60")
    async with api_server() as (url, service):
        keys = {}
        for name in ("alice", "bob", "root"):
            _, keys[name] = await service.keys.create(name, admin=name == "root")
        yield url, service, keys


async def test_continue_from_over_http_is_linked_reproducible_and_private(
    api: tuple[str, GenbotService, dict[str, str]],
) -> None:
    url, service, keys = api
    async with client(url, keys["alice"]) as alice, client(url, keys["bob"]) as bob, client(url, keys["root"]) as root:
        parent = (await alice.post("/v1/generate", json={"model": "alpha", "prompt": "ROMEO:", "length": 50})).json()
        body = {"continue_from": parent["id"], "seed": 8, "length": 30}
        first = (await alice.post("/v1/generate", json=body)).json()
        again = (await alice.post("/v1/generate", json=body | {"stream": True})).text
        refused = await bob.post("/v1/generate", json=body)
        unknown = await bob.post("/v1/generate", json=body | {"continue_from": 10**9})
        peek = await bob.get(f"/v1/generations/{parent['id']}")
        bob_thread = await bob.get(f"/v1/generations/{parent['id']}/thread")
        thread = (await alice.get(f"/v1/generations/{first['id']}/thread")).json()["generations"]
        admin_view = await root.get(f"/v1/generations/{first['id']}")
    assert first["parent_id"] == parent["id"] and first["model"] == "alpha" and len(first["text"]) == 30
    assert first["prompt"] == ("ROMEO:" + parent["text"])[-60:]  # [sampling] context_chars = 60
    streamed = "".join(data["text"] for event, data in parse_sse(again) if event == "token")
    assert streamed == first["text"]  # the streamed repeat: the same context and seed, the same text
    assert refused.status_code == unknown.status_code == peek.status_code == bob_thread.status_code == 404
    for response in (refused, peek, bob_thread):
        assert parent["text"] not in response.text and "ROMEO" not in response.text
    assert refused.json()["error"]["message"] == f"no generation with id {parent['id']}"
    assert [row["id"] for row in thread][:2] == [parent["id"], first["id"]]
    assert all(row["parent_id"] == parent["id"] for row in thread[1:])
    assert admin_view.status_code == 200 and admin_view.json()["parent_id"] == parent["id"]
    stored = await service.history(api_key_id=str((await service.keys.list())[1].id))  # bob's (keys by name)
    assert stored == []  # bob's refused requests stored nothing


async def test_preset_routes_save_use_list_and_delete(api: tuple[str, GenbotService, dict[str, str]]) -> None:
    url, _, keys = api
    calm = {"model": "beta", "temperature": 0.2, "length": 12, "seed_policy": "fixed", "seed": 5}
    async with client(url, keys["alice"]) as alice, client(url, keys["bob"]) as bob, client(url, keys["root"]) as root:
        saved = await alice.put("/v1/presets/calm", json={"params": calm})
        a = (await alice.post("/v1/generate", json={"preset": "calm"})).json()
        b = (await alice.post("/v1/generate", json={"preset": "calm", "prompt": ""})).json()
        bobs = await bob.post("/v1/generate", json={"preset": "calm"})
        not_admin = await alice.put("/v1/presets/house", json={"params": {"temperature": 1.0}, "global": True})
        made_global = await root.put("/v1/presets/house", json={"params": {"temperature": 1.0}, "global": True})
        bob_list = (await bob.get("/v1/presets")).json()["presets"]
        alice_list = (await alice.get("/v1/presets")).json()["presets"]
        shown = (await alice.get("/v1/presets/calm")).json()
        deleted = await alice.delete("/v1/presets/calm")
        gone = await alice.get("/v1/presets/calm")
        bob_deletes_global = await bob.delete("/v1/presets/house", params={"global": "true"})
    assert saved.status_code == 200 and saved.json()["params"]["seed"] == 5
    assert (a["model"], a["seed"], a["params"]["temperature"], len(a["text"])) == ("beta", 5, 0.2, 12)
    assert a["text"] == b["text"]  # fixed seed policy: the same text each time
    assert bobs.status_code == 404 and "no preset named 'calm'" in bobs.text
    assert not_admin.status_code == 403 and made_global.json()["global"] is True
    assert [(p["name"], p["global"]) for p in bob_list] == [("house", True)]
    assert [(p["name"], p["global"]) for p in alice_list] == [("calm", False), ("house", True)]
    assert shown["params"] == calm | {"top_k": None, "top_p": None, "stop": []}
    assert deleted.status_code == 200 and gone.status_code == 404
    assert bob_deletes_global.status_code == 403


async def test_a_request_under_a_quota_reads_its_preset_once(api: tuple[str, GenbotService, dict[str, str]]) -> None:
    url, service, keys = api
    [alice_key] = [k for k in await service.keys.list() if k.name == "alice"]
    await service.quotas.set_quota("key", str(alice_key.id), chars_per_day=1000)  # the length is reserved first
    async with client(url, keys["alice"]) as alice:
        await alice.put("/v1/presets/short", json={"params": {"model": "alpha", "length": 7}})
        with statements_on(service, "presets") as reads:
            made = await alice.post("/v1/generate", json={"preset": "short"})
    assert made.status_code == 200 and len(made.json()["text"]) == 7
    assert len(reads) == 1, reads  # the length reserved and the text generated come from one read


HOSTILE_NAMES = ["a b", "_last", ".hidden", "a/b", "x" * 65, "名", "a%00b", "-x", "a'--"]
HOSTILE_BODIES = [
    {"params": {"temperature": "hot"}},
    {"params": {"temperature": -1}},
    {"params": {"top_p": 2}},
    {"params": {"length": 10**9}},
    {"params": {"stop": ["\x00"]}},
    {"params": {"stop": ["a"] * 9}},
    {"params": {"seed_policy": "sometimes"}},
    {"params": {"seed_policy": "fixed"}},
    {"params": {"model": "../x"}},
    {"params": {"rm": "-rf"}},
    {"params": []},
    {"params": {}, "owner": "bob"},
    {},
]


async def test_hostile_preset_names_and_params_get_a_clear_error_and_store_nothing(
    api: tuple[str, GenbotService, dict[str, str]],
) -> None:
    url, _, keys = api
    async with client(url, keys["alice"]) as alice:
        for name in HOSTILE_NAMES:
            response = await alice.put(f"/v1/presets/{name}", json={"params": {"temperature": 0.5}})
            assert response.status_code in (400, 404, 422), (name, response.text)
            if response.status_code == 400:  # refused by the name rule, or a NUL by the input guard
                assert response.json()["error"]["message"].startswith(("preset name", "the path must not contain NUL"))
        for body in HOSTILE_BODIES:
            response = await alice.put("/v1/presets/ok", json=body)
            assert response.status_code in (400, 422), (body, response.text)
            assert response.json()["error"]["message"]
        listed = (await alice.get("/v1/presets")).json()["presets"]
        use = await alice.post("/v1/generate", json={"preset": "../../x"})
    assert listed == []
    assert use.status_code == 400 and "preset name" in use.text


async def test_chat_uses_the_whole_conversation_in_the_models_template(
    api: tuple[str, GenbotService, dict[str, str]],
) -> None:
    url, service, keys = api
    messages = [
        {"role": "system", "content": "A street in Verona."},
        {"role": "user", "name": "ROMEO", "content": "But soft!"},
        {"role": "assistant", "name": "JULIET", "content": "Ay me."},
        {"role": "user", "name": "ROMEO", "content": "She speaks. {text} stays as written."},
    ]
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=keys["alice"], max_retries=0) as c:
        reply = await c.chat.completions.create(model="play", messages=messages, max_tokens=40, seed=4)  # type: ignore[arg-type]
        plain = await c.chat.completions.create(model="alpha", messages=messages, max_tokens=5, seed=4)  # type: ignore[arg-type]
    rows = await service.history(limit=2)
    whole = (
        "SYSTEM:\nA street in Verona.\n\nROMEO:\nBut soft!\n\nJULIET:\nAy me.\n\n"
        "ROMEO:\nShe speaks. {text} stays as written.\n\nJULIET:\n"
    )
    assert rows[1].prompt == whole[-60:]  # cut from the front to [sampling] context_chars
    assert rows[1].stop == ("\n\n",)  # the reply ends where the template ends a message
    assert "\n\n" not in (reply.choices[0].message.content or "")
    assert rows[0].prompt == "She speaks. {text} stays as written."  # no template: the last user message, as before
    assert len(plain.choices[0].message.content or "") == 5


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{name}: no text", "needs {text} exactly once"),
        ("{text}{text}", "needs {text} exactly once"),
        ("{name}{name}{text}", "{name} at most once"),
        ("{user}: {text}", "unknown placeholder '{user}'"),
        ("{text} {0}", "unknown placeholder '{0}'"),
        ("{text} }", "unknown placeholder '}'"),
    ],
)
def test_a_card_with_a_broken_chat_template_is_refused(tmp_path: Path, template: str, problem: str) -> None:
    folder = write_model_folder(tmp_path, "m", "abc\n")
    card = folder / "plugin.toml"
    card.write_text(
        card.read_text(encoding="utf-8").replace("[architecture]", f"chat_template = {template!r}\n\n[architecture]", 1)
    )
    with pytest.raises(CheckpointError, match="chat_template") as refused:
        ModelCard.read(card)
    assert problem in str(refused.value)


async def test_ollama_chat_uses_the_template_too(api: tuple[str, GenbotService, dict[str, str]]) -> None:
    url, service, keys = api
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yes"},
        {"role": "user", "content": "Go"},
    ]
    body = {"model": "play:latest", "messages": messages, "stream": False, "options": {"num_predict": 8, "seed": 1}}
    async with client(url, keys["alice"]) as c:
        reply = (await c.post("/api/chat", json=body)).json()
    [row] = await service.history(limit=1)
    assert row.prompt == "USER:\nHi\n\nASSISTANT:\nYes\n\nUSER:\nGo\n\nASSISTANT:\n"
    assert row.stop == ("\n\n",) and reply["message"]["role"] == "assistant"

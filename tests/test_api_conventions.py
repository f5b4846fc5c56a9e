"""Conventions other tools rely on: placeholder keys, logprobs, n choices, ``user``, curl bodies, Ollama routes."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from genbot.config import ApiSettings
from genbot.resources import bundled_plugins_dir
from genbot.service import GenbotService
from tests.helpers import api_server, client, parse_sse

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def local(plugins_dir: Path) -> AsyncIterator[tuple[str, GenbotService]]:
    """A keyless loopback server over alpha and beta."""
    async with api_server() as (url, service):
        yield url, service


def oai(url: str, key: str = "sk-no-key-required") -> openai.AsyncOpenAI:
    """The official client with a placeholder key, as every local OpenAI-compatible server is called."""
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


# ----- keys ----------------------------------------------------------------------------------------


async def test_a_placeholder_key_is_the_local_caller_and_a_real_key_is_still_attributed(
    local: tuple[str, GenbotService],
) -> None:
    url, service = local
    async with oai(url) as c:
        placeholder = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=10, seed=1)
    row, key = await service.keys.create("mine")
    async with oai(url, key) as c:
        await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=10, seed=1)
    newest, oldest = await service.history()
    assert len(placeholder.choices[0].text) == 10
    assert oldest.api_key_id == "anonymous" and newest.api_key_id == str(row.id)


async def test_with_keys_required_a_placeholder_key_is_refused(plugins_dir: Path) -> None:
    async with api_server(ApiSettings(require_keys=True)) as (url, _), oai(url) as c:
        with pytest.raises(openai.AuthenticationError):
            await c.models.list()


# ----- logprobs, n, user ---------------------------------------------------------------------------


async def test_completion_logprobs_score_every_character(local: tuple[str, GenbotService]) -> None:
    url, _ = local
    async with oai(url) as c:
        argmax = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=40, temperature=0, logprobs=3)
        sampled = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=40, seed=3, logprobs=0)
    choice = argmax.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens == list(choice.text) and lp.text_offset == list(range(40))
    assert lp.token_logprobs is not None and lp.top_logprobs is not None
    for char, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3 and logprob <= 0
        best = max(top, key=lambda k: top[k])
        assert best == char and math.isclose(top[char], logprob)  # temperature 0 picks the most likely character
    sampled_lp = sampled.choices[0].logprobs
    assert sampled_lp is not None and sampled_lp.token_logprobs is not None
    assert sum(sampled_lp.token_logprobs) < sum(lp.token_logprobs)  # sampling strays from the likeliest text


async def test_chat_logprobs_streamed_or_not_agree(local: tuple[str, GenbotService]) -> None:
    url, _ = local
    messages = [{"role": "user", "content": "JULIET:"}]
    async with oai(url) as c:
        whole = await c.chat.completions.create(
            model="beta", messages=messages, max_tokens=30, seed=2, logprobs=True, top_logprobs=2
        )
        stream = await c.chat.completions.create(
            model="beta", messages=messages, max_tokens=30, seed=2, logprobs=True, stream=True
        )
        chunks = [chunk async for chunk in stream]
    content = whole.choices[0].logprobs.content if whole.choices[0].logprobs else None
    assert content is not None and "".join(t.token for t in content) == whole.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.logprob for t in content)
    streamed = [
        t for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content or []
    ]
    assert [t.token for t in streamed] == [t.token for t in content]
    assert all(math.isclose(a.logprob, b.logprob, abs_tol=1e-4) for a, b in zip(streamed, content, strict=True))


async def test_n_choices_use_consecutive_seeds_and_are_stored_with_the_user(local: tuple[str, GenbotService]) -> None:
    url, service = local
    async with oai(url) as c:
        three = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=25, seed=7, n=3, user="alice")
        singles = [
            (await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=25, seed=s)).choices[0].text
            for s in (7, 8, 9)
        ]
        stream = await c.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": "ROMEO:"}], max_tokens=25, seed=7, n=2, stream=True
        )
        parts: dict[int, str] = {0: "", 1: ""}
        finished = set()
        async for chunk in stream:
            for ch in chunk.choices:
                parts[ch.index] += ch.delta.content or ""
                if ch.finish_reason:
                    finished.add(ch.index)
    assert [ch.index for ch in three.choices] == [0, 1, 2]
    assert [ch.text for ch in three.choices] == singles and len(set(singles)) == 3
    assert three.usage is not None and three.usage.completion_tokens == 75
    assert [parts[0], parts[1]] == singles[:2] and finished == {0, 1}
    rows = await service.history(user_id="alice")
    assert sorted(r.seed for r in rows) == [7, 8, 9] and all(r.output in singles for r in rows)


async def test_n_above_the_cap_is_refused(local: tuple[str, GenbotService]) -> None:
    url, service = local
    async with oai(url) as c:
        with pytest.raises(openai.UnprocessableEntityError):
            await c.completions.create(model="alpha", prompt="x", max_tokens=5, n=17)
    assert await service.history() == []


# ----- bodies sent the way curl sends them ---------------------------------------------------------


async def test_a_json_body_sent_as_a_form_is_read_as_json(local: tuple[str, GenbotService]) -> None:
    url, _ = local
    body = '{"model": "alpha", "prompt": "ROMEO:", "length": 12, "seed": 1}'
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with client(url) as c:
        as_form = await c.post("/v1/generate", content=body, headers=form)
        as_json = await c.post("/v1/generate", content=body, headers={"Content-Type": "application/json"})
        not_json = await c.post("/v1/generate", content="model=alpha&prompt=x", headers=form)
    assert as_form.status_code == 200 and as_form.json()["text"] == as_json.json()["text"]
    assert not_json.status_code == 422


def readme_curl_examples() -> list[str]:
    """Every ``curl`` command the README prints (fenced lines and inline code)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    fenced = re.findall(r"^(curl .+)$", text, re.M)
    inline = re.findall(r"`(curl [^`]+)`", text)
    return fenced + inline


@pytest.mark.slow
async def test_every_readme_curl_example_works_as_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    examples = readme_curl_examples()
    assert len(examples) >= 5
    monkeypatch.setenv("GENBOT_PLUGINS", "shakespeare,linux,captioner")
    shutil.copy(bundled_plugins_dir() / "captioner" / "samples" / "scene0.png", tmp_path / "scene.png")
    generating = 0
    async with api_server() as (url, service):
        port = url.rsplit(":", 1)[1]
        for example in examples:
            argv = [arg.replace("localhost:8000", f"127.0.0.1:{port}") for arg in shlex.split(example, comments=True)]
            done = await _run(argv, tmp_path)
            assert done.returncode == 0, example
            out = done.stdout
            if "event: " in out:  # server-sent events (native streaming)
                events = parse_sse(out)
                assert events[-1][0] == "done" and events[-1][1]["status"] == "completed", example
            else:  # one JSON object, or NDJSON lines (Ollama streaming)
                last = json.loads(out.strip().splitlines()[-1])
                assert "error" not in last, (example, last)
                assert last.get("done", True) is True, example
            generating += "/api/tags" not in example
    assert len(await service.history()) == generating


async def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command off the event loop (the server runs on it)."""
    import asyncio

    return await asyncio.to_thread(subprocess.run, argv, cwd=cwd, capture_output=True, text=True, timeout=120)


# ----- Ollama --------------------------------------------------------------------------------------


async def test_ollama_generate_streams_ndjson_and_matches_the_whole_answer(local: tuple[str, GenbotService]) -> None:
    url, service = local
    options = {"temperature": 0.7, "seed": 4, "num_predict": 40}
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        lines = []
        async with c.stream(
            "POST", "/api/generate", json={"model": "alpha", "prompt": "ROMEO:", "options": options}
        ) as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            async for line in r.aiter_lines():
                if line:
                    lines.append(json.loads(line))
        whole = await c.post(
            "/api/generate", json={"model": "alpha:latest", "prompt": "ROMEO:", "options": options, "stream": False}
        )
    *pieces, last = lines
    text = "".join(p["response"] for p in pieces)
    assert all(p["done"] is False and p["model"] == "alpha:latest" for p in pieces)
    assert last["done"] is True and last["done_reason"] == "length" and last["eval_count"] == 40
    assert last["total_duration"] > 0 and last["prompt_eval_count"] == len("ROMEO:")
    assert whole.json()["response"] == text and len(text) == 40
    assert [r.frontend for r in await service.history()] == ["api", "api"]


async def test_ollama_chat_and_tags(local: tuple[str, GenbotService]) -> None:
    url, _ = local
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        tags = (await c.get("/api/tags")).json()["models"]
        chat = await c.post(
            "/api/chat",
            json={"model": "beta", "messages": [{"role": "user", "content": "JULIET:"}], "stream": False,
                  "options": {"num_predict": 15, "seed": 1, "stop": ["zzz"]}},
        )  # fmt: skip
        missing = await c.post("/api/chat", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert [t["name"] for t in tags] == ["alpha:latest", "beta:latest"]
    assert all(t["details"]["format"] == "safetensors" and len(t["digest"]) == 64 for t in tags)
    reply = chat.json()
    assert reply["message"]["role"] == "assistant" and len(reply["message"]["content"]) == 15 and reply["done"]
    assert missing.status_code == 404 and "unknown model" in json.dumps(missing.json())


async def test_the_ollama_python_client_works_unchanged(local: tuple[str, GenbotService]) -> None:
    ollama = pytest.importorskip("ollama")
    url, _ = local
    c = ollama.AsyncClient(host=url)
    listed = await c.list()
    assert sorted(m.model for m in listed.models) == ["alpha:latest", "beta:latest"]
    reply = await c.generate(model="alpha", prompt="ROMEO:", options={"num_predict": 20, "seed": 1})
    assert len(reply.response) == 20 and reply.done
    text = ""
    async for part in await c.chat(
        model="beta", messages=[{"role": "user", "content": "x"}], stream=True, options={"num_predict": 10}
    ):
        text += part.message.content or ""
    assert len(text) == 10
    with pytest.raises(ollama.ResponseError):
        await c.generate(model="nope", prompt="x")

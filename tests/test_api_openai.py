"""The OpenAI-compatible routes, driven by the official ``openai`` client against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from genbot.service import GenbotService
from tests.helpers import api_server, client, parse_sse


@pytest.fixture
async def oai(plugins_dir: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, GenbotService, str]]:
    """An OpenAI client with a fresh key for a server over alpha and beta; (client, service, key)."""
    async with api_server() as (url, service):
        _, key = await service.keys.create("oai")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as c:
            yield c, service, url


async def test_models_list(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, _, _ = oai
    assert sorted(m.id for m in (await c.models.list()).data) == ["alpha", "beta"]


async def test_completion_is_seeded_and_counted_in_chars(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, service, _ = oai
    a = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=30, seed=5, temperature=0.7)
    b = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=30, seed=5, temperature=0.7)
    assert a.choices[0].text == b.choices[0].text and len(a.choices[0].text) == 30
    assert a.choices[0].finish_reason == "length"
    assert a.usage is not None and (a.usage.prompt_tokens, a.usage.completion_tokens) == (6, 30)
    assert a.system_fingerprint == "alpha-v1-seed5"
    rows = await service.history()
    assert [r.output for r in rows] == [b.choices[0].text, a.choices[0].text]
    assert rows[0].api_key_id is not None and rows[0].api_key_id != "anonymous"


async def test_completion_stream_ends_with_finish_reason(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, service, _ = oai
    stream = await c.completions.create(model="beta", prompt="JULIET:", max_tokens=50, seed=1, stream=True)
    chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].text for ch in chunks)
    assert len(text) == 50 and chunks[-1].choices[0].finish_reason == "length"
    assert (await service.history())[0].output == text


async def test_stop_strings_end_generation(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, _, _ = oai
    full = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=200, seed=9, temperature=0)
    text = full.choices[0].text
    stop = text[20:23]
    cut = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=200, seed=9, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


async def test_chat_uses_last_user_message(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, service, _ = oai
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "NURSE:"},
    ]
    reply = await c.chat.completions.create(model="alpha", messages=messages, max_tokens=20, seed=2)  # type: ignore[arg-type]
    assert reply.choices[0].message.role == "assistant" and len(reply.choices[0].message.content or "") == 20
    assert (await service.history())[0].prompt == "NURSE:"
    stream = await c.chat.completions.create(model="alpha", messages=messages, max_tokens=20, seed=2, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"
    counted = await c.chat.completions.create(
        model="alpha",
        messages=messages,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    last = [chunk async for chunk in counted][-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 20)


async def test_errors_come_back_as_openai_errors(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, _, _ = oai
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        await c.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="max_length"):
        await c.completions.create(model="alpha", prompt="x", max_tokens=10**7)
    with pytest.raises(openai.BadRequestError, match="role 'user'"):
        await c.chat.completions.create(model="alpha", messages=[{"role": "system", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="top_logprobs: needs logprobs"):
        await c.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}], top_logprobs=3)
    # Keys are optional on this server: an unknown token is the local caller (see test_api_conventions).
    async with openai.AsyncOpenAI(base_url=str(c.base_url), api_key="gb_nope", max_retries=0) as placeholder:
        assert len((await placeholder.models.list()).data) == 2


async def test_raw_stream_ends_with_done(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    _, service, url = oai
    _, key = await service.keys.create("raw")
    async with client(url, key) as c:
        r = await c.post("/v1/completions", json={"model": "alpha", "prompt": "a", "max_tokens": 5, "stream": True})
    events = parse_sse(r.text)
    assert events[-1] == ("message", "[DONE]")
    assert all(data["object"] == "text_completion" for _, data in events[:-1])


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("completions", "best_of", 3),
        ("completions", "suffix", "END"),
        ("completions", "logit_bias", {"50256": -100}),
        ("completions", "frequency_penalty", 0.5),
        ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("chat", "functions", [{"name": "f", "parameters": {}}]),
        ("chat", "response_format", {"type": "json_object"}),
        ("chat", "presence_penalty", -1),
    ],
)
async def test_unimplemented_fields_are_refused_with_400(
    oai: tuple[openai.AsyncOpenAI, GenbotService, str], route: str, field: str, value: object
) -> None:
    c, service, _ = oai
    with pytest.raises(openai.BadRequestError, match=f"{field}: not supported"):
        if route == "completions":
            await c.completions.create(model="alpha", prompt="x", max_tokens=5, **{field: value})  # type: ignore[arg-type]
        else:
            messages = [{"role": "user", "content": "x"}]
            await c.chat.completions.create(model="alpha", messages=messages, max_tokens=5, **{field: value})  # type: ignore[arg-type]
    assert await service.history() == []  # nothing was generated or stored


async def test_fields_at_their_defaults_are_accepted(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, _, _ = oai
    text = await c.completions.create(
        model="alpha", prompt="x", max_tokens=5, n=1, best_of=1, logprobs=None, frequency_penalty=0,
        presence_penalty=0.0, logit_bias={}, suffix=None, user="u",
    )  # fmt: skip
    chat = await c.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "x"}], max_tokens=5, n=1, logprobs=False,
        response_format={"type": "text"}, tool_choice="none", store=False, metadata={"a": "b"},
    )  # fmt: skip
    assert len(text.choices[0].text) == 5 and len(chat.choices[0].message.content or "") == 5


async def test_echo_repeats_the_prompt_streamed_or_not(oai: tuple[openai.AsyncOpenAI, GenbotService, str]) -> None:
    c, _, _ = oai
    whole = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=10, seed=4, echo=True)
    stream = await c.completions.create(model="alpha", prompt="ROMEO:", max_tokens=10, seed=4, echo=True, stream=True)
    streamed = "".join([chunk.choices[0].text async for chunk in stream])
    assert whole.choices[0].text.startswith("ROMEO:") and len(whole.choices[0].text) == 16
    assert streamed == whole.choices[0].text

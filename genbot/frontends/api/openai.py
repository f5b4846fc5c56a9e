"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Tokens are characters here: ``max_tokens`` is the number of characters to generate and
``usage`` counts characters. ``logprobs`` / ``top_logprobs`` score each generated character under
the model's own distribution (genbot/engine/logprobs.py); ``n`` > 1 runs independent choices
with seeds ``seed``, ``seed+1``, … (each stored as its own generation); ``user`` is stored as the
generation's user. Unsupported OpenAI fields (``best_of``, penalties, ``tools`` …, see
``UNSUPPORTED``) are accepted when they ask for the default and otherwise refused with a 400
naming the field; other unknown fields are ignored, as OpenAI's newer ones (``store``,
``metadata`` …) change nothing here. The official client sends only the fields a caller passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from genbot.chat import DEFAULT_REPLY_NAME, Turn, render, reply_stop
from genbot.engine.logprobs import MAX_TOP, CharLogprob, CharScorer
from genbot.errors import InvalidRequest
from genbot.frontends.api.auth import Caller, CallerDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented, error_body
from genbot.frontends.api.streaming import collect, sse, sse_response, text_chunks
from genbot.frontends.api.text import Text
from genbot.frontends.api.usage import start_generation
from genbot.service import Generation, GenerationRequest, GenerationResult, Requester

router = APIRouter(tags=["openai"], responses=documented(*COMMON))
Ctx = Annotated[ApiContext, Depends(context)]
_FINISH = {"completed": "length", "cancelled": "stop", "failed": "stop"}
MAX_STOPS = 4  # OpenAI's own limit
MAX_N = 16  # choices per request (each is a generation of its own, charged to the key's quota)
SEED_LIMIT = 2**63  # seeds of the n choices wrap below this
# OpenAI fields genbot does not implement → the values (as JSON) that ask for what it does anyway.
UNSUPPORTED: dict[str, frozenset[str]] = {
    name: frozenset(["null", *defaults])
    for name, defaults in {
        "best_of": ["1"],
        "logit_bias": ["{}"],
        "frequency_penalty": ["0", "0.0"],
        "presence_penalty": ["0", "0.0"],
        "suffix": ['""'],
        "tools": ["[]"],
        "tool_choice": ['"none"'],
        "functions": ["[]"],
        "function_call": ['"none"'],
        "response_format": ['{"type": "text"}'],
        "modalities": ['["text"]'],
        "audio": [],
        "prediction": [],
    }.items()
}


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields completions and chat completions share."""

    # Clients send fields genbot has no use for; refuse_unsupported checks the ones that would matter.
    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=100)
    max_tokens: int | None = Field(None, ge=1, description="Characters to generate.")
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: Text | list[Text] | None = Field(None, description="A string or up to 4 strings that end generation.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_N, description="Independent choices, seeded seed, seed+1, …")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)

    def refuse_unsupported(self) -> None:
        """Raise InvalidRequest (400) for an unimplemented field set to anything but its default."""
        for name, value in (self.model_extra or {}).items():
            allowed = UNSUPPORTED.get(name)
            if allowed is not None and json.dumps(value, sort_keys=True) not in allowed:
                raise InvalidRequest(f"{name}: not supported by genbot (send it unset or as its default)")

    def stops(self) -> list[str]:
        """``stop`` as a list."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise InvalidRequest(f"stop: at most {MAX_STOPS} strings, got {len(stops)}")
        return stops


class CompletionBody(_Sampling):
    """``POST /v1/completions``."""

    prompt: Text | list[Text] = Field("", description="The prompt (a list must hold exactly one string).")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP, description="Score each character; this many alternatives.")


class ChatMessage(BaseModel):
    """One chat message; content may be a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: Text | list[dict[str, Any]] | None = None
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9 _.'-]*$")

    def speaker(self) -> str:
        """Who speaks, for a chat template: the message's name, else its role in capitals."""
        return self.name or self.role.upper()

    def text(self) -> str:
        """The message's text (text parts joined)."""
        if isinstance(self.content, list):
            parts = [p.get("text") for p in self.content if p.get("type") == "text"]
            return "".join(p for p in parts if isinstance(p, str))
        return self.content or ""


class ChatBody(_Sampling):
    """``POST /v1/chat/completions``: the conversation in the model's chat template, else the last user message."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = Field(False, description="Score each generated character.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP, description="Alternatives per character (logprobs).")

    def prompt(self, template: str | None = None, limit: int = 0) -> str:
        """The conversation rendered with ``template`` (cut to ``limit``), or without one the last user message."""
        if not any(m.role == "user" for m in self.messages):
            raise InvalidRequest("messages: no message with role 'user'")
        if template is not None:
            turns = [Turn(m.speaker(), _storable(m.text())) for m in self.messages]
            replies = [m.speaker() for m in self.messages if m.role == "assistant"]
            return render(template, turns, replies[-1] if replies else DEFAULT_REPLY_NAME, limit)
        for message in reversed(self.messages):
            if message.role == "user":
                return _storable(message.text())
        raise InvalidRequest("messages: no message with role 'user'")


def _storable(text: str) -> str:
    """A chat message text the database can store, else InvalidRequest."""
    from genbot.frontends.api.text import storable

    try:
        return storable(text)
    except ValueError as e:
        raise InvalidRequest(f"messages: {e}") from e


@router.get("/v1/models", summary="Models, OpenAI style")
async def models(ctx: Ctx, who: CallerDep) -> dict[str, Any]:
    """Every loaded generator as an OpenAI model object."""
    data = [
        {"id": e.name, "object": "model", "created": 0, "owned_by": "genbot"}
        for e in ctx.service.models()
        if e.status == "loaded"
    ]
    return {"object": "list", "data": data}


@router.post(
    "/v1/completions", summary="Text completion, OpenAI style", responses={200: {"content": {"text/event-stream": {}}}}
)
async def completions(body: CompletionBody, ctx: Ctx, who: CallerDep) -> Any:
    """Continue ``prompt``; ``stream: true`` answers with ``data:`` chunks ending in ``[DONE]``."""
    body.refuse_unsupported()
    prompt = _one_prompt(body.prompt)
    run = await _Run.start(ctx, body, prompt, body.max_tokens, who, logprobs=body.logprobs)
    if body.stream:
        return sse_response(_stream(run, chat=False, usage=_wants_usage(body), echo=prompt if body.echo else ""))
    choices, chars = [], []
    echo = prompt if body.echo else ""
    for index, (text, result, scored) in enumerate(await run.collect()):
        choice = {"text": echo + text, "index": index, "logprobs": _completion_logprobs(scored, len(echo))}
        choices.append(choice | {"finish_reason": _finish(result)})
        chars.append(len(text))
    return _envelope(run, "text_completion", choices, chars)


@router.post(
    "/v1/chat/completions",
    summary="Chat completion, OpenAI style",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(body: ChatBody, ctx: Ctx, who: CallerDep) -> Any:
    """Continue the last user message as the assistant's reply."""
    body.refuse_unsupported()
    template = chat_template_of(ctx, body.model)
    prompt = body.prompt(template, ctx.service.context_chars)
    if template is not None and body.stop is None and (end := reply_stop(template)):
        body.stop = end  # the reply ends where the template ends a message
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs: needs logprobs: true")
    length = body.max_completion_tokens or body.max_tokens
    top = (body.top_logprobs or 0) if body.logprobs else None
    run = await _Run.start(ctx, body, prompt, length, who, logprobs=top)
    if body.stream:
        return sse_response(_stream(run, chat=True, usage=_wants_usage(body)))
    choices, chars = [], []
    for index, (text, result, scored) in enumerate(await run.collect()):
        message = {"role": "assistant", "content": text}
        choice = {"index": index, "message": message, "logprobs": _chat_logprobs(scored)}
        choices.append(choice | {"finish_reason": _finish(result)})
        chars.append(len(text))
    return _envelope(run, "chat.completion", choices, chars)


def chat_template_of(ctx: ApiContext, model: str) -> str | None:
    """The generator's chat template (None without one; an unknown model fails later, with the usual 404)."""
    try:
        card = ctx.service.model(model).card
    except InvalidRequest:
        return None
    return card.chat_template if card else None


def _one_prompt(prompt: str | list[str]) -> str:
    """The single prompt of a completion request (a one-element list is accepted)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise InvalidRequest(f"prompt: exactly one prompt per request is supported, got {len(prompt)}")
    return prompt[0]


def _request(body: _Sampling, prompt: str, length: int | None, key_id: str, seed: int | None) -> GenerationRequest:
    """The service request for an OpenAI-style body (``user`` is stored as the generation's user)."""
    return GenerationRequest(
        model=body.model,
        prompt=prompt,
        temperature=body.temperature,
        top_p=body.top_p,
        length=length,
        seed=seed,
        stop=body.stops(),
        requester=Requester(frontend="api", user_id=body.user or None, api_key_id=key_id),
    )


def _seeds(seed: int | None, n: int) -> list[int | None]:
    """``seed, seed+1, …`` for ``n`` choices; one unseeded choice lets the engine pick."""
    if seed is None and n == 1:
        return [None]
    base = seed if seed is not None else random.randrange(2**31)
    return [(base + i) % SEED_LIMIT for i in range(n)]


@dataclass
class _Run:
    """The ``n`` generations of one request, each with its scorer when logprobs were asked for."""

    ctx: ApiContext
    prompt: str
    gens: list[Generation]
    scorers: list[CharScorer | None]
    started: float

    @classmethod
    async def start(
        cls, ctx: ApiContext, body: _Sampling, prompt: str, length: int | None, who: Caller, *, logprobs: int | None
    ) -> _Run:
        """Start every choice (refused up front, none left running, if one cannot start)."""
        started = time.perf_counter()
        gens: list[Generation] = []
        try:
            for seed in _seeds(body.seed, body.n):
                gens.append(await start_generation(ctx, _request(body, prompt, length, who.key_id, seed), who))
        except BaseException:
            for gen in gens:
                gen.cancel()
            raise
        scorers = [None if logprobs is None else _scorer(gen, logprobs) for gen in gens]
        return cls(ctx, prompt, gens, scorers, started)

    async def collect(self) -> list[tuple[str, GenerationResult, list[CharLogprob] | None]]:
        """Every choice's whole text, result and scores."""
        texts = await asyncio.gather(*(collect(gen, self.ctx, self.started) for gen in self.gens))
        out = []
        for gen, text, scorer in zip(self.gens, texts, self.scorers, strict=True):
            scored = None if scorer is None else await asyncio.to_thread(scorer.score, text)
            out.append((text, await gen.result(), scored))
        return out

    async def chunks(self) -> AsyncGenerator[tuple[int, str], None]:
        """(choice index, text) as the choices produce it, interleaved."""
        if len(self.gens) == 1:
            async with contextlib.aclosing(text_chunks(self.gens[0], self.ctx, self.started)) as chunks:
                async for chunk in chunks:
                    yield 0, chunk
            return
        queue: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

        async def pump(index: int, gen: Generation) -> None:
            try:
                async with contextlib.aclosing(text_chunks(gen, self.ctx, self.started)) as chunks:
                    async for chunk in chunks:
                        await queue.put((index, chunk))
            finally:
                await queue.put((index, None))

        tasks = [asyncio.create_task(pump(i, gen)) for i, gen in enumerate(self.gens)]
        try:
            left = len(tasks)
            while left:
                index, piece = await queue.get()
                if piece is None:
                    left -= 1
                else:
                    yield index, piece
        finally:
            for task in tasks:
                task.cancel()  # the client left: each pump's aclosing cancels its generation
            await asyncio.gather(*tasks, return_exceptions=True)


def _scorer(gen: Generation, top: int) -> CharScorer:
    """A scorer for ``gen``'s output, reporting ``top`` alternatives per character."""
    assert gen.entry.loaded is not None  # a running generation has a loaded model
    return CharScorer(gen.entry.loaded, gen.stream.prime_ids, top)


def _completion_logprobs(scored: list[CharLogprob] | None, offset: int) -> dict[str, Any] | None:
    """The legacy completions ``logprobs`` object: characters, their log-probabilities, the top ones, offsets."""
    if scored is None:
        return None
    return {
        "tokens": [s.char for s in scored],
        "token_logprobs": [s.logprob for s in scored],
        "top_logprobs": [dict(s.top) for s in scored],
        "text_offset": list(range(offset, offset + len(scored))),
    }


def _chat_logprobs(scored: list[CharLogprob] | None) -> dict[str, Any] | None:
    """The chat ``logprobs`` object: one entry per character with its top alternatives."""
    if scored is None:
        return None

    def token(char: str, logprob: float) -> dict[str, Any]:
        return {"token": char, "logprob": logprob, "bytes": list(char.encode("utf-8"))}

    content = [token(s.char, s.logprob) | {"top_logprobs": [token(c, v) for c, v in s.top]} for s in scored]
    return {"content": content, "refusal": None}


def _wants_usage(body: _Sampling) -> bool:
    """Whether the client asked for a usage chunk at the end of the stream."""
    return body.stream_options is not None and body.stream_options.include_usage


async def _stream(run: _Run, *, chat: bool, usage: bool, echo: str = "") -> AsyncGenerator[str, None]:
    """OpenAI chunks: text deltas, a last chunk per choice with finish_reason, the usage if asked, then ``[DONE]``."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    first = [True] * len(run.gens)
    offsets = [len(echo)] * len(run.gens)
    if echo:  # completions with echo: the prompt comes first, as in the non-streaming text
        for index in range(len(run.gens)):
            yield sse(_chunk(run, kind, {"index": index, "text": echo, "logprobs": None, "finish_reason": None}))
    async with contextlib.aclosing(run.chunks()) as chunks:
        async for index, chunk in chunks:
            scorer = run.scorers[index]
            scored = None if scorer is None else await asyncio.to_thread(scorer.score, chunk)
            if chat:
                delta = {"role": "assistant", "content": chunk} if first[index] else {"content": chunk}
                choice = {"index": index, "delta": delta, "logprobs": _chat_logprobs(scored)}
            else:
                choice = {"index": index, "text": chunk, "logprobs": _completion_logprobs(scored, offsets[index])}
            first[index] = False
            offsets[index] += len(chunk)
            yield sse(_chunk(run, kind, choice | {"finish_reason": None}))
    results = [await gen.result() for gen in run.gens]
    for index, result in enumerate(results):
        if result.status == "failed":
            yield sse(error_body(result.stats.error or "generation failed", "server_error"))
        last = {"index": index, "delta": {}} if chat else {"index": index, "text": "", "logprobs": None}
        yield sse(_chunk(run, kind, last | {"finish_reason": _finish(result)}))
    if usage:
        yield sse(_envelope(run, kind, [], [len(r.output) for r in results]))
    yield sse("[DONE]")


def _finish(result: GenerationResult) -> str:
    """OpenAI's finish_reason: "stop" for a stop string (or an early end), else "length"."""
    return "stop" if result.stats.done_reason == "stop" else _FINISH.get(result.status, "stop")


def _chunk(run: _Run, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI stream chunk around ``choice``."""
    return _response(run, kind, [choice])


def _response(run: _Run, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """One OpenAI response object around ``choices`` (named after the first generation)."""
    gen = run.gens[0]
    return {
        "id": _id(gen, kind),
        "object": kind,
        "created": int(time.time()),
        "model": gen.model,
        "system_fingerprint": _fingerprint(gen),
        "choices": choices,
    }


def _envelope(run: _Run, kind: str, choices: list[dict[str, Any]], chars: list[int]) -> dict[str, Any]:
    """A complete OpenAI response with usage counted in characters (the prompt once, every choice's output)."""
    prompt_chars = len(run.gens[0].stream.prompt)
    completion = sum(chars)
    usage = {"prompt_tokens": prompt_chars, "completion_tokens": completion, "total_tokens": prompt_chars + completion}
    return _response(run, kind, choices) | {"usage": usage}


def _id(gen: Generation, kind: str) -> str:
    """OpenAI-style id built from the stored generation id."""
    return f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{gen.id}"


def _fingerprint(gen: Generation) -> str:
    """Model, version and seed: what it takes to reproduce the text."""
    return f"{gen.model}-v{gen.version}-seed{gen.params.seed}"

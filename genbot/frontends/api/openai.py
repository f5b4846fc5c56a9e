"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Tokens are characters here: ``max_tokens`` is the number of characters to generate and
``usage`` counts characters. Unsupported OpenAI fields (``n`` > 1, ``logprobs``, penalties,
``tools`` …, see ``UNSUPPORTED``) are accepted when they ask for the default and otherwise refused
with a 400 naming the field; other unknown fields are ignored, as OpenAI's newer ones (``store``,
``metadata`` …) change nothing here. The official client sends only the fields a caller passes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from genbot.errors import InvalidRequest
from genbot.frontends.api.auth import CallerDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented, error_body
from genbot.frontends.api.streaming import collect, sse, sse_response, text_chunks
from genbot.frontends.api.text import Text
from genbot.frontends.api.usage import start_generation
from genbot.service import Generation, GenerationRequest, GenerationResult

router = APIRouter(tags=["openai"], responses=documented(*COMMON))
Ctx = Annotated[ApiContext, Depends(context)]
_FINISH = {"completed": "length", "cancelled": "stop", "failed": "stop"}
MAX_STOPS = 4  # OpenAI's own limit
# OpenAI fields genbot does not implement → the values (as JSON) that ask for what it does anyway.
UNSUPPORTED: dict[str, frozenset[str]] = {
    name: frozenset(["null", *defaults])
    for name, defaults in {
        "n": ["1"],
        "best_of": ["1"],
        "logprobs": ["false"],
        "top_logprobs": ["0"],
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


class ChatMessage(BaseModel):
    """One chat message; content may be a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: Text | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (text parts joined)."""
        if isinstance(self.content, list):
            parts = [p.get("text") for p in self.content if p.get("type") == "text"]
            return "".join(p for p in parts if isinstance(p, str))
        return self.content or ""


class ChatBody(_Sampling):
    """``POST /v1/chat/completions``: the model continues the last user message."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def prompt(self) -> str:
        """The last user message's text."""
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
    started = time.perf_counter()
    gen = await start_generation(ctx, _request(body, prompt, body.max_tokens, who.key_id), who)
    if body.stream:
        echo = prompt if body.echo else ""
        return sse_response(_stream(gen, ctx, started, chat=False, usage=_wants_usage(body), echo=echo))
    text = await collect(gen, ctx, started)
    result = await gen.result()
    choice = {"text": (prompt if body.echo else "") + text, "index": 0, "logprobs": None}
    return _envelope(gen, "text_completion", choice | {"finish_reason": _finish(result)}, len(prompt), len(text))


@router.post(
    "/v1/chat/completions",
    summary="Chat completion, OpenAI style",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(body: ChatBody, ctx: Ctx, who: CallerDep) -> Any:
    """Continue the last user message as the assistant's reply."""
    body.refuse_unsupported()
    prompt = body.prompt()
    started = time.perf_counter()
    length = body.max_completion_tokens or body.max_tokens
    gen = await start_generation(ctx, _request(body, prompt, length, who.key_id), who)
    if body.stream:
        return sse_response(_stream(gen, ctx, started, chat=True, usage=_wants_usage(body)))
    text = await collect(gen, ctx, started)
    result = await gen.result()
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
    return _envelope(gen, "chat.completion", choice | {"finish_reason": _finish(result)}, len(prompt), len(text))


def _one_prompt(prompt: str | list[str]) -> str:
    """The single prompt of a completion request (a one-element list is accepted)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise InvalidRequest(f"prompt: exactly one prompt per request is supported, got {len(prompt)}")
    return prompt[0]


def _request(body: _Sampling, prompt: str, length: int | None, key_id: str) -> GenerationRequest:
    """The service request for an OpenAI-style body."""
    return GenerationRequest(
        model=body.model,
        prompt=prompt,
        temperature=body.temperature,
        top_p=body.top_p,
        length=length,
        seed=body.seed,
        stop=body.stops(),
        frontend="api",
        api_key_id=key_id,
    )


def _wants_usage(body: _Sampling) -> bool:
    """Whether the client asked for a usage chunk at the end of the stream."""
    return body.stream_options is not None and body.stream_options.include_usage


async def _stream(
    gen: Generation, ctx: ApiContext, started: float, *, chat: bool, usage: bool, echo: str = ""
) -> AsyncGenerator[str, None]:
    """OpenAI chunks: text deltas, a last chunk with finish_reason, the usage if asked, then ``[DONE]``."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    first = True
    if echo:  # completions with echo: the prompt comes first, as in the non-streaming text
        yield sse(_chunk(gen, kind, {"index": 0, "text": echo, "logprobs": None, "finish_reason": None}))
    async with contextlib.aclosing(text_chunks(gen, ctx, started)) as chunks:
        async for chunk in chunks:
            delta = {"role": "assistant", "content": chunk} if first else {"content": chunk}
            choice = {"index": 0, "delta": delta} if chat else {"index": 0, "text": chunk, "logprobs": None}
            first = False
            yield sse(_chunk(gen, kind, choice | {"finish_reason": None}))
    result = await gen.result()
    if result.status == "failed":
        yield sse(error_body(result.stats.error or "generation failed", "server_error"))
    last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": "", "logprobs": None}
    yield sse(_chunk(gen, kind, last | {"finish_reason": _finish(result)}))
    if usage:
        counted = _envelope(gen, kind, {}, len(gen.stream.prompt), len(result.output))
        yield sse(counted | {"choices": []})
    yield sse("[DONE]")


def _finish(result: GenerationResult) -> str:
    """OpenAI's finish_reason: "stop" for a stop string (or an early end), else "length"."""
    return "stop" if result.stats.done_reason == "stop" else _FINISH.get(result.status, "stop")


def _chunk(gen: Generation, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI response object (or stream chunk) around ``choice``."""
    return {
        "id": _id(gen, kind),
        "object": kind,
        "created": int(time.time()),
        "model": gen.model,
        "system_fingerprint": _fingerprint(gen),
        "choices": [choice],
    }


def _envelope(gen: Generation, kind: str, choice: dict[str, Any], prompt_chars: int, chars: int) -> dict[str, Any]:
    """A complete OpenAI response with usage counted in characters."""
    usage = {"prompt_tokens": prompt_chars, "completion_tokens": chars, "total_tokens": prompt_chars + chars}
    return _chunk(gen, kind, choice) | {"usage": usage}


def _id(gen: Generation, kind: str) -> str:
    """OpenAI-style id built from the stored generation id."""
    return f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{gen.id}"


def _fingerprint(gen: Generation) -> str:
    """Model, version and seed: what it takes to reproduce the text."""
    return f"{gen.model}-v{gen.version}-seed{gen.params.seed}"

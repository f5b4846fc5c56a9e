"""Ollama-compatible routes: ``/api/tags``, ``/api/generate``, ``/api/chat`` (and ``/api/version``).

Tools written for Ollama talk to genbot unchanged: they stream by default, one JSON object per
line (``application/x-ndjson``), each with the text so far's next piece and ``done: false``, and
a last object with ``done: true``, ``done_reason`` and the timing figures the engine already
keeps in Ollama's shape (durations in nanoseconds). Sampling comes in ``options``
(``temperature``, ``top_k``, ``top_p``, ``num_predict``, ``seed``, ``stop``); options genbot has
no use for (``num_ctx``, ``repeat_penalty`` …) are ignored, as a model without them would.
Model names may carry Ollama's ``:latest`` tag. Errors keep genbot's JSON shape, whose top-level
``error`` key is what Ollama clients read.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from genbot.chat import DEFAULT_REPLY_NAME, Turn, render, reply_stop
from genbot.errors import InvalidRequest
from genbot.frontends.api.auth import Caller, CallerDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented
from genbot.frontends.api.openai import chat_template_of
from genbot.frontends.api.streaming import SSE_HEADERS, collect, text_chunks
from genbot.frontends.api.text import Text
from genbot.frontends.api.usage import start_generation
from genbot.service import Generation, GenerationRequest, GenerationResult, Requester

router = APIRouter(tags=["ollama"], responses=documented(*COMMON))
Ctx = Annotated[ApiContext, Depends(context)]
NDJSON = "application/x-ndjson"
TAG = ":latest"
MAX_STOPS = 8


class Options(BaseModel):
    """Ollama's ``options``: the sampling fields genbot has; the rest are ignored."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0.0)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    num_predict: int | None = Field(None, ge=-2, description="Characters to generate (-1, -2: the default).")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: list[Text] | None = Field(None, max_length=MAX_STOPS)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # keep_alive, format, template …: nothing to do here

    model: str = Field(max_length=120)
    stream: bool = Field(True, description="NDJSON lines (Ollama's default); false: one JSON object.")
    options: Options = Field(default_factory=Options)


class OllamaGenerateBody(_Body):
    """``POST /api/generate``."""

    prompt: Text = ""


class OllamaMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="ignore")

    role: str = Field(max_length=32)
    content: Text = ""


class OllamaChatBody(_Body):
    """``POST /api/chat``: the conversation in the model's chat template, else the last user message."""

    messages: list[OllamaMessage] = Field(min_length=1)


@router.get("/api/version", summary="Server version, Ollama style")
async def ollama_version() -> dict[str, str]:
    """genbot's version (clients check that a server answers)."""
    try:
        return {"version": version("genbot")}
    except PackageNotFoundError:
        return {"version": "0"}


@router.get("/api/tags", summary="Local models, Ollama style")
async def tags(ctx: Ctx, who: CallerDep) -> dict[str, Any]:
    """Every loaded text generator as an Ollama model entry."""
    models = []
    for entry in ctx.service.models():
        if entry.status != "loaded" or entry.card is None or entry.card.kind != "charrnn" or entry.loaded is None:
            continue
        card = entry.card
        weights = entry.loaded.path / card.weights.file
        params = sum(p.numel() for p in entry.loaded.network.parameters())
        stat = weights.stat() if weights.is_file() else None
        models.append(
            {
                "name": card.name + TAG,
                "model": card.name + TAG,
                "modified_at": datetime.fromtimestamp(stat.st_mtime if stat else 0, UTC).isoformat(),
                "size": stat.st_size if stat else 0,
                "digest": card.weights.sha256,
                "details": {
                    "parent_model": "",
                    "format": "safetensors",
                    "family": f"charrnn-{card.architecture.cell}",
                    "families": [f"charrnn-{card.architecture.cell}"],
                    "parameter_size": f"{params / 1e6:.2f}M",
                    "quantization_level": card.weights.dtype.upper().replace("FLOAT", "F"),
                },
            }
        )
    return {"models": models}


@router.post("/api/generate", summary="Generate, Ollama style", responses={200: {"content": {NDJSON: {}}}})
async def ollama_generate(body: OllamaGenerateBody, ctx: Ctx, who: CallerDep) -> Any:
    """Continue ``prompt``; NDJSON lines unless ``stream`` is false."""
    return await _run(ctx, body, body.prompt, who.key_id, who, chat=False)


@router.post("/api/chat", summary="Chat, Ollama style", responses={200: {"content": {NDJSON: {}}}})
async def ollama_chat(body: OllamaChatBody, ctx: Ctx, who: CallerDep) -> Any:
    """The assistant's reply: the conversation rendered in the model's chat template (or the last user message)."""
    prompt = next((m.content for m in reversed(body.messages) if m.role == "user"), None)
    if prompt is None:
        raise InvalidRequest("messages: no message with role 'user'")
    template = chat_template_of(ctx, body.model.removesuffix(TAG))
    if template is not None:
        turns = [Turn(m.role.upper(), m.content) for m in body.messages]
        replies = [m.role.upper() for m in body.messages if m.role == "assistant"]
        prompt = render(template, turns, replies[-1] if replies else DEFAULT_REPLY_NAME, ctx.service.context_chars)
        if body.options.stop is None and (end := reply_stop(template)):
            body.options.stop = [end]  # the reply ends where the template ends a message
    return await _run(ctx, body, prompt, who.key_id, who, chat=True)


async def _run(ctx: ApiContext, body: _Body, prompt: str, key_id: str, who: Caller, *, chat: bool) -> Any:
    """Start the generation, then answer with NDJSON lines or one object."""
    started = time.perf_counter()
    gen = await start_generation(ctx, _request(body, prompt, key_id), who)
    if body.stream:
        return StreamingResponse(_lines(gen, ctx, started, chat=chat), media_type=NDJSON, headers=SSE_HEADERS)
    text = await collect(gen, ctx, started)
    return _final(gen, await gen.result(), text, chat=chat)


def _request(body: _Body, prompt: str, key_id: str) -> GenerationRequest:
    """The service request for an Ollama body."""
    options = body.options
    length = options.num_predict if options.num_predict and options.num_predict > 0 else None
    return GenerationRequest(
        model=body.model.removesuffix(TAG),
        prompt=prompt,
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        length=length,
        seed=options.seed,
        stop=list(options.stop or []),
        requester=Requester(frontend="api", api_key_id=key_id),
    )


async def _lines(gen: Generation, ctx: ApiContext, started: float, *, chat: bool) -> AsyncGenerator[str, None]:
    """One JSON line per chunk, then the final line with the stats."""
    async with contextlib.aclosing(text_chunks(gen, ctx, started)) as chunks:
        async for chunk in chunks:
            yield _line(_piece(gen, chunk, chat=chat) | {"done": False})
    yield _line(_final(gen, await gen.result(), "", chat=chat))


def _piece(gen: Generation, text: str, *, chat: bool) -> dict[str, Any]:
    """The fields every line has: model, time, and the text as a response or an assistant message."""
    head: dict[str, Any] = {"model": gen.model + TAG, "created_at": datetime.now(UTC).isoformat()}
    if chat:
        return head | {"message": {"role": "assistant", "content": text}}
    return head | {"response": text}


def _final(gen: Generation, result: GenerationResult, text: str, *, chat: bool) -> dict[str, Any]:
    """The last object: ``done``, why, the figures, and (not streaming) the whole text."""
    stats = result.stats
    out = _piece(gen, text, chat=chat) | {
        "done": True,
        "done_reason": "length" if stats.done_reason == "length" else "stop",
        "total_duration": stats.total_duration,
        "load_duration": stats.load_duration,
        "prompt_eval_count": stats.prompt_eval_count,
        "prompt_eval_duration": stats.prompt_eval_duration,
        "eval_count": stats.eval_count,
        "eval_duration": stats.eval_duration,
    }
    if not chat:
        out["context"] = []
    if result.status == "failed":
        out["error"] = stats.error or "generation failed"
    return out


def _line(obj: dict[str, Any]) -> str:
    """One NDJSON line."""
    return json.dumps(obj, ensure_ascii=False) + "\n"

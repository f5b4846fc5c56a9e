"""genbot's own routes: generator cards, generate (JSON or SSE), the caller's history."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genbot.frontends.api.auth import CallerDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented, error_body
from genbot.frontends.api.streaming import collect, sse, sse_response, text_chunks
from genbot.frontends.api.text import Text
from genbot.frontends.api.usage import start_generation
from genbot.service import Generation, GenerationRequest, GenerationResult, Identity, Requester

router = APIRouter(tags=["native"], responses=documented(*COMMON))
Ctx = Annotated[ApiContext, Depends(context)]
MAX_STOPS = 8


class GenerateBody(BaseModel):
    """A generation request; unset sampling fields take the model's and bot.toml's defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "",
        max_length=100,
        description="Generator name (GET /v1/generators); may be left out with a preset or continue_from.",
    )
    prompt: Text = Field("", description="Text the model continues; empty starts from the model's primer.")
    temperature: float | None = Field(None, ge=0.0, description="0 = argmax; higher = more random.")
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="Keep the k most likely characters (0 = off).")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus cut-off (1 = off).")
    length: int | None = Field(None, ge=1, description="Characters to generate.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Same seed, same text; unset picks one.")
    stop: list[Text] = Field(default_factory=list, max_length=MAX_STOPS, description="End at any of these strings.")
    stream: bool = Field(False, description="Answer with server-sent events (token, done, error).")
    continue_from: int | None = Field(
        None,
        ge=1,
        le=2**62,
        description="Continue this stored generation of yours: its tail, then prompt, is the context.",
    )
    again_of: int | None = Field(
        None,
        ge=1,
        le=2**62,
        description="Run this stored generation of yours again: same prompt and settings, new seed.",
    )
    preset: str | None = Field(
        None, max_length=100, description="A preset of yours (or a global one) for unset fields."
    )

    @model_validator(mode="after")
    def _names_a_model(self) -> GenerateBody:
        if not self.model and self.preset is None and self.continue_from is None and self.again_of is None:
            raise ValueError("model is required (unless preset, continue_from or again_of gives one)")
        return self


class GenerateResult(BaseModel):
    """A finished generation."""

    id: int
    model: str
    version: int
    status: Literal["completed", "cancelled", "failed"]
    text: str
    seed: int
    params: dict[str, Any]
    mapped: dict[str, str]
    dropped: list[str]
    stats: dict[str, Any]
    parent_id: int | None = None
    prompt: str = ""


def to_request(body: GenerateBody, key_id: str, admin: bool = False) -> GenerationRequest:
    """The service request for a native body."""
    return GenerationRequest(
        model=body.model,
        prompt=body.prompt,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        length=body.length,
        seed=body.seed,
        stop=list(body.stop),
        requester=Requester(frontend="api", api_key_id=key_id),
        continue_from=body.continue_from,
        again_of=body.again_of,
        preset=body.preset,
        admin=admin,
    )


@router.get("/v1/generators", summary="Every generator with its card")
async def generators(ctx: Ctx, who: CallerDep) -> dict[str, Any]:
    """Loaded and failed generators, with their model cards."""
    return {"generators": [_entry(e) for e in ctx.service.models()]}


def _entry(entry: Any) -> dict[str, Any]:
    """A registry entry as JSON: name, status, error, source and card."""
    card = entry.card.model_dump(mode="json") if entry.card else None
    return {"name": entry.name, "status": entry.status, "error": entry.error, "source": entry.source, "card": card}


@router.post(
    "/v1/generate",
    summary="Generate text (JSON, or server-sent events with stream: true)",
    response_model=GenerateResult,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def generate(body: GenerateBody, ctx: Ctx, who: CallerDep) -> Any:
    """Run one generation; refused up front (400/404/503) if it cannot start."""
    started = time.perf_counter()
    gen = await start_generation(ctx, to_request(body, who.key_id, who.admin), who)
    if body.stream:
        return sse_response(_events(gen, ctx, started))
    text = await collect(gen, ctx, started)
    return _result(gen, await gen.result(), text)


async def _events(gen: Generation, ctx: ApiContext, started: float) -> AsyncGenerator[str, None]:
    """token events, then error (if it failed) and done."""
    async with contextlib.aclosing(text_chunks(gen, ctx, started)) as chunks:
        async for chunk in chunks:
            yield sse({"text": chunk}, "token")
    result = await gen.result()
    if result.status == "failed":
        yield sse(error_body(result.stats.error or "generation failed", "server_error"), "error")
    done = _result(gen, result, None).model_dump(exclude={"text"})
    yield sse(done, "done")


def _result(gen: Generation, result: GenerationResult, text: str | None) -> GenerateResult:
    """The response for a finished generation (``text`` None: the stored output)."""
    params = gen.params
    return GenerateResult(
        id=result.id,
        model=gen.model,
        version=gen.version,
        status=result.status,
        text=result.output if text is None else text,
        seed=params.seed or 0,
        params={
            "temperature": params.temperature,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "length": params.max_length,
            "seed": params.seed,
            "stop": list(params.stop),
        },
        mapped=gen.mapped,
        dropped=gen.dropped,
        stats=result.stats.to_dict(),
        parent_id=gen.parent_id,
        prompt=gen.prompt,
    )


@router.get("/v1/generations", summary="The caller's stored generations, newest first")
async def generations(
    ctx: Ctx,
    who: CallerDep,
    model: Annotated[str | None, Query(max_length=100)] = None,
    search: Annotated[Text | None, Query(max_length=1000)] = None,
    q: Annotated[
        Text | None,
        Query(
            max_length=10_000,  # longer than a search may be: the service's own limit answers with 400
            description="Full-text search, best match first among the newest 2,000 matches (older ones follow,"
            ' newest first): words (all must match), OR, -word, "a phrase".',
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    """History of generations made with the caller's key; with ``q``, ranked by how well they match."""
    filters = {"model": model, "search": search, "query": q, "limit": limit, "offset": offset}
    rows = await ctx.service.history(api_key_id=who.key_id, **filters)
    return {"generations": [_row(r) for r in rows]}


@router.get("/v1/generations/{gen_id}", summary="One stored generation of the caller's")
async def generation(ctx: Ctx, who: CallerDep, gen_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
    """A generation made with the caller's key (any, for an admin key); 404 for anyone else's."""
    return _row(await ctx.service.generation(gen_id, _identity(who)))


@router.get("/v1/generations/{gen_id}/thread", summary="The chain of continuations through a generation")
async def generation_thread(ctx: Ctx, who: CallerDep, gen_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
    """Its ancestors, itself and its continuations, oldest first (only the caller's rows)."""
    rows = await ctx.service.thread(gen_id, _identity(who))
    return {"generations": [_row(r) for r in rows]}


def _identity(who: Any) -> Identity:
    """The caller as owner of generations and presets."""
    return Identity("api", api_key_id=who.key_id, admin=who.admin)


def _row(row: Any) -> dict[str, Any]:
    """A stored generation as JSON (who made it is left out: it is the caller)."""
    fields = (
        "id", "created_at", "finished_at", "model", "model_version", "prompt", "output", "temperature", "top_k",
        "top_p", "max_length", "seed", "stop", "chars", "time_to_first_char_ms", "duration_ms", "status", "error",
        "parent_id",
    )  # fmt: skip
    out = {name: getattr(row, name) for name in fields}
    out["created_at"] = row.created_at.isoformat()
    out["finished_at"] = row.finished_at.isoformat() if row.finished_at else None
    out["stop"] = list(row.stop)
    out["status"] = str(row.status)
    return out

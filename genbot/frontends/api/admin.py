"""Admin routes (admin keys): corpora, fine-tune jobs and model versions — the admin CLI's operations,
through the same service methods."""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from genbot.errors import CorpusError
from genbot.frontends.api.auth import AdminDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented
from genbot.frontends.api.text import Text
from genbot.jobs.spec import MAX_VERSION, RetrainRequest
from genbot.training.options import TrainingOptions

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=documented(*COMMON, 403))
Ctx = Annotated[ApiContext, Depends(context)]
CORPUS_NAME = r"^[a-z0-9_-]{1,64}$"
UPLOAD_PREFIX = "/v1/admin/corpora"
SOURCE = r"^(active|scratch|[1-9][0-9]{0,9})$"  # ASCII digits only: "²" is a digit to str.isdigit()
MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger one would overflow PostgreSQL's int4 (a 500, not a 404)


def plain(row: Any) -> dict[str, Any]:
    """A storage dataclass as JSON-ready data."""
    return {k: _json(v) for k, v in dataclasses.asdict(row).items()}


def _json(value: Any) -> Any:
    """Datetimes as ISO text, enums as their values, the rest as is."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


# ----- corpora -----------------------------------------------------------------------------------


@router.get("/corpora", summary="Registered corpora")
async def list_corpora(ctx: Ctx, who: AdminDep) -> dict[str, Any]:
    """Every registered corpus, by name."""
    return {"corpora": [plain(c) for c in await ctx.service.corpora.list()]}


@router.put(
    "/corpora/{name}",
    summary="Upload a text corpus (the raw UTF-8 body)",
    status_code=201,
    openapi_extra={
        "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
    },
)
async def upload_corpus(
    name: Annotated[str, PathParam(pattern=CORPUS_NAME)],
    request: Request,
    ctx: Ctx,
    who: AdminDep,
    licence: Annotated[Text, Query(max_length=200)] = "",
    description: Annotated[Text, Query(max_length=2000)] = "",
) -> dict[str, Any]:
    """Store the body as corpus ``name`` after the same checks as ``genbot corpus add``."""
    with tempfile.TemporaryDirectory(prefix="genbot-upload-") as tmp:
        path = Path(tmp) / "input.txt"
        await _save_body(request, path)
        row = await ctx.service.corpora.add(name, [path], "text", licence, description)
    return plain(row)


async def _save_body(request: Request, path: Path) -> None:
    """Write the request body to ``path`` as it arrives (the size cap is the middleware's)."""
    with path.open("wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
    if path.stat().st_size == 0:
        raise CorpusError("the uploaded corpus is empty")


@router.get("/corpora/{name}", summary="One corpus")
async def get_corpus(name: Annotated[str, PathParam(max_length=64)], ctx: Ctx, who: AdminDep) -> dict[str, Any]:
    """A corpus by name (404 if there is none)."""
    return plain(await ctx.service.corpora.get(name))


# ----- jobs ----------------------------------------------------------------------------------------


class RetrainBody(BaseModel):
    """A fine-tune job, as ``genbot retrain`` takes it (strict types: ``"5"`` is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Text = Field(max_length=100)
    corpus: Text = Field(max_length=64)
    source: str = Field("active", pattern=SOURCE, max_length=20, description="'active', 'scratch' or a version number.")
    steps: Annotated[int, Field(ge=1, le=MAX_VERSION)] | SkipJsonSchema[None] = Field(
        None, description="Budget: optimizer steps (at most [jobs] max_steps)."
    )
    epochs: Annotated[float, Field(gt=0, allow_inf_nan=False)] | SkipJsonSchema[None] = Field(
        None, description="Budget: passes over the train split (at most [jobs] max_epochs)."
    )
    seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | SkipJsonSchema[None] = Field(
        None, description="Budget: training seconds (at most [jobs] max_seconds)."
    )
    options: TrainingOptions = Field(
        default_factory=TrainingOptions, description="Hyperparameters, as `genbot train` names them."
    )


@router.post("/jobs", summary="Queue a fine-tune job", status_code=201)
async def create_job(body: RetrainBody, ctx: Ctx, who: AdminDep) -> dict[str, Any]:
    """Check and queue a retrain; nothing is queued if it could only fail."""
    fields = body.model_dump(exclude={"options"}, exclude_none=True)
    request = RetrainRequest(**fields, options=body.options.given())
    return plain(await ctx.service.jobs.retrain(request))


@router.get("/jobs", summary="Jobs, newest first")
async def list_jobs(
    ctx: Ctx,
    who: AdminDep,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    model: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Jobs matching the filters."""
    return {"jobs": [plain(j) for j in await ctx.service.jobs.list(status=status, model=model, limit=limit)]}


@router.get("/jobs/{job_id}", summary="One job with its log")
async def get_job(
    job_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    ctx: Ctx,
    who: AdminDep,
    events_after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Only log lines with a larger id (a watcher polls for what is new).")
    ] = 0,
) -> dict[str, Any]:
    """A job and its events (404 if there is none)."""
    job = await ctx.service.jobs.get(job_id)
    events = await ctx.service.jobs.events(job_id, after_id=events_after)
    return plain(job) | {"events": [plain(e) for e in events]}


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
async def cancel_job(job_id: Annotated[int, PathParam(ge=1, le=MAX_ID)], ctx: Ctx, who: AdminDep) -> dict[str, Any]:
    """Cancel a queued job now, or ask its worker to stop a running one."""
    return plain(await ctx.service.jobs.cancel(job_id))


# ----- model versions ------------------------------------------------------------------------------


@router.get("/models/{model}/versions", summary="A model's versions")
async def versions(model: Annotated[str, PathParam(max_length=100)], ctx: Ctx, who: AdminDep) -> dict[str, Any]:
    """Every recorded version, oldest first."""
    return {"versions": [plain(v) for v in await ctx.service.versions.list(model)]}


class ActivateBody(BaseModel):
    """Which version to make active."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1)


@router.post("/models/{model}/activate", summary="Activate a model version")
async def activate(
    model: Annotated[str, PathParam(max_length=100)], body: ActivateBody, ctx: Ctx, who: AdminDep
) -> dict[str, Any]:
    """Make a version active (checked to load first); servers pick it up live."""
    return plain(await ctx.service.versions.activate(model, body.version))

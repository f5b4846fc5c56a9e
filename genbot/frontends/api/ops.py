"""Operations: ``/healthz`` and ``/metrics`` (no key needed: they reveal no prompts or outputs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from genbot.frontends.api.context import ApiContext, context

router = APIRouter(tags=["ops"])
Ctx = Annotated[ApiContext, Depends(context)]
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_COUNT_LIMIT = 1000  # jobs counted per state on each scrape


@router.get("/healthz", summary="Liveness and loaded models")
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """ok, with the loaded generators."""
    loaded = [e.name for e in ctx.service.models() if e.status == "loaded"]
    return {"status": "ok", "models": loaded}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    """The app's metrics in Prometheus's text format (job counts are read at scrape time)."""
    for state in JOB_STATES:
        jobs = await ctx.service.jobs.list(status=state, limit=JOB_COUNT_LIMIT)
        ctx.metrics.jobs.labels(state).set(len(jobs))
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

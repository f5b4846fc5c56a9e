"""Operations: ``/healthz`` and ``/metrics`` (no API key needed: they reveal no prompts or outputs).

``/metrics`` needs ``Authorization: Bearer <[api] metrics_key>`` when that is set; job counts
come from one ``GROUP BY`` query per scrape, so scraping costs the same with a million jobs.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import ApiError, documented

router = APIRouter(tags=["ops"])
Ctx = Annotated[ApiContext, Depends(context)]
_metrics_bearer = HTTPBearer(auto_error=False, description="[api] metrics_key, when it is set.")


@router.get("/healthz", summary="Liveness and loaded models")
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """ok, with the loaded generators."""
    loaded = [e.name for e in ctx.service.models() if e.status == "loaded"]
    return {"status": "ok", "models": loaded}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=documented(401))
async def metrics(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)]
) -> Response:
    """The app's metrics in Prometheus's text format (job counts are read at scrape time)."""
    _check_metrics_key(ctx.settings.metrics_key, credentials)
    for state, count in (await ctx.service.jobs.counts()).items():
        ctx.metrics.jobs.labels(state).set(count)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _check_metrics_key(expected: str, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Raise 401 unless no metrics key is configured or the request sends it."""
    if not expected:
        return
    sent = credentials.credentials if credentials else ""
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise ApiError(401, "GET /metrics needs 'Authorization: Bearer <[api] metrics_key>'", "authentication_error")

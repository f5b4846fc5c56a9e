"""What every route needs, kept on ``app.state``: the service, the API settings, metrics, limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from genbot.config import ApiSettings
from genbot.frontends.api.limits import RateLimiter
from genbot.frontends.api.metrics import ApiMetrics
from genbot.service import GenbotService

INSPECTIONS_AT_ONCE = 2  # POST /v1/inspect: tracing and rendering are CPU-heavy


@dataclass
class ApiContext:
    """The service and the per-app state the routes share."""

    service: GenbotService
    settings: ApiSettings
    metrics: ApiMetrics
    limiter: RateLimiter  # requests per key
    bad_keys: RateLimiter  # invalid keys per client address
    touched: dict[int, float] = field(default_factory=dict)  # key id → monotonic time of the last last_used write
    background: set[asyncio.Task[None]] = field(default_factory=set)  # quota charges in flight (kept referenced)
    inspections: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(INSPECTIONS_AT_ONCE))

    def queue_depth(self) -> float:
        """Streams queued or running across every loaded model."""
        return float(self.service.queue_depth())


def context(request: Request) -> ApiContext:
    """The app's context (a FastAPI dependency)."""
    ctx: ApiContext = request.app.state.genbot
    return ctx

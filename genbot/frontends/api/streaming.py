"""Running one generation for an HTTP client: text chunks with metrics, SSE framing, cancel on leave."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi.responses import StreamingResponse

from genbot.frontends.api.context import ApiContext
from genbot.service import Generation

# After sending a chunk, let characters gather this long before the next: the engine can wake a
# reader every 5 ms, and one SSE event per stream per wake-up costs server and client more CPU
# (JSON, framing, syscalls) than the model steps at 64 streams. 50 ms still reads as live typing.
# A stream that ends meanwhile is sent at once.
EVENT_INTERVAL_S = 0.05
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies must not buffer a stream


async def text_chunks(gen: Generation, ctx: ApiContext, started: float) -> AsyncGenerator[str, None]:
    """The generation's chunks, counted in the metrics; a consumer that leaves early cancels it."""
    ctx.metrics.active_streams.inc()
    first = True
    try:
        async for chunk in gen:
            if first:
                ctx.metrics.ttfc.labels(gen.model).observe(time.perf_counter() - started)
                first = False
            ctx.metrics.chars.labels(gen.model).inc(len(chunk))
            yield chunk
            # the end cuts the wait short: the client's next request should not wait on a timer
            await gen.stream.finished_within(EVENT_INTERVAL_S)
    finally:
        ctx.metrics.active_streams.dec()
        # Reached early only when the client went away (or the server stops): stop stepping it.
        if not gen.stream.done:
            gen.cancel()


async def collect(gen: Generation, ctx: ApiContext, started: float) -> str:
    """All of the generation's text (non-streaming responses)."""
    async with contextlib.aclosing(text_chunks(gen, ctx, started)) as chunks:
        return "".join([chunk async for chunk in chunks])


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event carrying ``data`` as JSON (or as is, for a plain string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def sse_response(events: AsyncGenerator[str, None]) -> StreamingResponse:
    """A ``text/event-stream`` response of already framed events."""
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)

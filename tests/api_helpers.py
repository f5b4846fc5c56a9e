"""Fixtures' helpers for the HTTP API tests: a service on a fresh SQLite file and a live server."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from genbot.config import ApiSettings, load_settings
from genbot.frontends.api import create_app
from genbot.frontends.api.app import running
from genbot.service import GenbotService


@contextlib.asynccontextmanager
async def api_server(
    api: ApiSettings | None = None, clock: Callable[[], float] | None = None
) -> AsyncIterator[tuple[str, GenbotService]]:
    """An open service (settings from the environment) behind a real uvicorn server; yields (url, service).

    ``clock`` (seconds since the epoch) replaces the rate limiters' and the quota policy's clocks, so
    a test's requests share one minute and one UTC day however slowly it runs.
    """
    settings = load_settings()
    async with GenbotService(settings) as service:
        app = create_app(service, api or settings.api)
        if clock is not None:
            app.state.genbot.limiter.clock = app.state.genbot.bad_keys.clock = clock
            service.quotas.clock = lambda: datetime.fromtimestamp(clock(), UTC)
        async with running(app) as url:
            yield url, service


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a server-sent-events body; data is JSON when it parses."""
    events = []
    for block in text.strip().split("\n\n"):
        event, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data += line[len("data: ") :]
        try:
            events.append((event, json.loads(data)))
        except json.JSONDecodeError:
            events.append((event, data))
    return events


def client(url: str, key: str | None = None) -> httpx.AsyncClient:
    """An httpx client for ``url``, with a Bearer key if given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=30)


def as_curl(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | str | None = None) -> str:
    """A curl command line that repeats a request (the Authorization header left out), for failure messages."""
    parts = ["curl", "-sS", "-X", method, shlex.quote(url)]
    for name, value in (headers or {}).items():
        if name.lower() != "authorization":
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    if body:
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        text = raw.decode("utf-8", "backslashreplace")  # lone surrogates and NULs stay visible and printable
        shown = text if len(text) <= 2000 else f"{text[:2000]}… ({len(text):,} chars)"
        parts += ["--data-binary", shlex.quote(shown)]
    return " ".join(parts)

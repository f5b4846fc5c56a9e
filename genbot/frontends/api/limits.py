"""Per-key request rate limits (fixed one-minute windows) and the request-body size cap.

Requests are counted in the database (``rate_windows``), one atomic upsert per request, so the
limit holds across every API replica sharing the database.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genbot.frontends.api.errors import ApiError, error_response

WINDOW_S = 60.0


Counter = Callable[[str, str, int], Awaitable[int]]  # (scope, subject, window) -> requests so far


class RateLimiter:
    """Counts requests per subject in fixed one-minute windows through a shared counter."""

    def __init__(
        self, per_minute: int, count: Counter, clock: Callable[[], float] = time.time, *, scope: str = "key"
    ) -> None:
        self.per_minute = per_minute
        self.count = count  # GenbotService.count_request: the database's window counts
        self.clock = clock
        self.scope = scope  # "key": requests per API key; "addr": invalid keys per client address

    async def hit(self, subject: str, what: str = "requests") -> None:
        """Count one request; raises ApiError 429 with Retry-After once the window is full."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        window = int(now // WINDOW_S)
        if await self.count(self.scope, subject, window) > self.per_minute:
            retry = WINDOW_S - (now - window * WINDOW_S)
            raise ApiError(
                429, f"rate limit of {self.per_minute} {what} per minute reached", "rate_limit_exceeded",
                retry_after=retry,
            )  # fmt: skip


class _TooLarge(HTTPException):
    """The body grew past the cap while being read (an HTTPException, so FastAPI's body parsing
    passes it through instead of turning it into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit:,} bytes")


class BodySizeLimit:
    """Answer 413 for bodies over the cap: from Content-Length before reading, or while streaming."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_upload_bytes: int,
        upload_prefix: str,
        path_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_prefix = upload_prefix
        self.path_limits = path_limits or {}  # exact path → its own cap (e.g. image uploads)

    def limit_for(self, path: str) -> int:
        """The cap for a request path: its own, the corpus-upload cap, or the default."""
        if path in self.path_limits:
            return self.path_limits[path]
        return self.max_upload_bytes if path.startswith(self.upload_prefix) else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared size, then count what is actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with a ``receive`` that stops at ``limit`` bytes (chunked bodies have no length)."""
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(limit)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length, or None (absent or not a number)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> ASGIApp:
    """The 413 response for a body over ``limit``."""
    return error_response(413, f"request body is larger than the limit of {limit:,} bytes", "request_too_large")

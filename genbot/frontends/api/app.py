"""The FastAPI app: ``create_app(service)`` for tests and servers, ``serve`` to run it with uvicorn.

The app never opens or closes the service: ``genbot api`` and ``genbot serve`` hold one
``async with GenbotService(...)`` around the server, and tests hand in their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genbot.config import ApiSettings
from genbot.errors import ConfigError
from genbot.frontends.api import admin, caption, inspect, native, ollama, openai, ops, presets
from genbot.frontends.api.context import ApiContext
from genbot.frontends.api.errors import install_error_handlers
from genbot.frontends.api.guards import AllowedHosts, CleanInput, is_loopback_name
from genbot.frontends.api.limits import BodySizeLimit, RateLimiter
from genbot.frontends.api.metrics import ApiMetrics
from genbot.frontends.web import router as web_router
from genbot.plugins import add_routes, load_plugins
from genbot.service import GenbotService

log = logging.getLogger("genbot.api")


def create_app(service: GenbotService, settings: ApiSettings | None = None) -> FastAPI:
    """An app serving ``service`` (already open) with ``settings`` (default: the service's [api])."""
    settings = settings or service.settings.api

    async def count_request(scope: str, subject: str, window: int) -> int:
        return await service.quotas.count_request(scope, subject, window)

    app = FastAPI(title="genbot", version="1", description="Char-RNN text generation: native and OpenAI-compatible.")
    ctx = ApiContext(
        service,
        settings,
        ApiMetrics(lambda: ctx.queue_depth(), service.serving_paths),
        RateLimiter(settings.rate_per_minute, count_request),
        RateLimiter(settings.bad_keys_per_minute, count_request, scope="addr"),
    )
    app.state.genbot = ctx
    for router in (
        native.router,
        presets.router,
        inspect.router,
        caption.router,
        openai.router,
        ollama.router,
        admin.router,
        ops.router,
    ):
        app.include_router(router)
    if settings.playground:
        app.include_router(web_router)  # the page at /, a client of the routes above
    add_routes(service.plugins if service.plugins is not None else load_plugins(service.settings), app)
    install_error_handlers(app)
    # Innermost: reads JSON bodies only after the size cap below.
    app.add_middleware(CleanInput, raw_body_prefixes=(admin.UPLOAD_PREFIX, caption.CAPTION_PATH))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes,
                       upload_prefix=admin.UPLOAD_PREFIX,
                       path_limits={caption.CAPTION_PATH: caption.MAX_CAPTION_BODY_BYTES})  # fmt: skip
    app.add_middleware(AllowedHosts, allowed=allowed_hosts(settings))
    app.add_middleware(RequestMetrics, metrics=ctx.metrics)
    return app


def allowed_hosts(settings: ApiSettings) -> list[str]:
    """Host names requests may name besides loopback: the configured ones and a specific bind address."""
    extra = [] if settings.host in ("0.0.0.0", "::", "") else [settings.host]
    return [*settings.allowed_hosts, *extra]


class RequestMetrics:
    """Count every response by route template (not raw path: ids would explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, noting the status the response started with."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, note_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()


def check_bind(settings: ApiSettings) -> None:
    """Refuse to listen off loopback unless every request needs a key (ConfigError says how to fix it)."""
    if settings.require_keys or is_loopback_name(settings.host):
        return
    raise ConfigError(
        f"refusing to listen on {settings.host}: a non-loopback address needs API keys; set [api] require_keys = true "
        "(or GENBOT_API__REQUIRE_KEYS=true) and create keys with `genbot keys create NAME`"
    )


def make_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` whose signals the caller owns (no handlers of its own)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    return _QuietServer(config)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to genbot (``genbot serve`` stops every loop together)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield


async def serve(service: GenbotService, stop: asyncio.Event, settings: ApiSettings | None = None) -> None:
    """Serve the API until ``stop`` is set (a ``genbot serve`` loop, and ``genbot api``)."""
    settings = settings or service.settings.api
    check_bind(settings)
    server = make_server(create_app(service, settings), settings.host, settings.port)
    task = asyncio.create_task(server.serve(), name="genbot-api-server")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
    if not stop.is_set() and not server.started:
        raise ConfigError(f"the API server could not listen on {settings.host}:{settings.port}")
    log.info("API server stopped")


@contextlib.asynccontextmanager
async def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` in a real uvicorn server on this event loop; yields its base URL (tests, benches)."""
    server = make_server(app, host, port or free_port(host))
    task = asyncio.create_task(server.serve(), name="genbot-api-test-server")
    while not server.started:
        if task.done():
            await task  # raises why it could not start
            raise RuntimeError("the API server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{server.config.port}"
    finally:
        server.should_exit = True
        await task


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (tests and benches)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

"""Bearer API keys: who is calling, whether they may, and how much.

With ``[api] require_keys = false`` (allowed on loopback only) a request without a key, or with
any bearer token that is not a genbot key (the placeholder every OpenAI or Ollama client sends to
a local server), is the local ``anonymous`` caller, who may generate; it may use the admin routes
only with ``[api] unkeyed_admin = true``. A valid genbot key is still attributed to its key. With
keys required, every route but ``/healthz`` and ``/metrics`` needs an active key, the admin routes
an admin key, and invalid keys are counted per client address (``bad_keys_per_minute``) so a
key-guessing flood gets 429.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import ApiError

ANONYMOUS = "anonymous"  # api_key_id stored for generations of keyless local callers
TOUCH_EVERY_S = 60.0  # last_used_at is a write: record it at most once a minute per key

_bearer = HTTPBearer(auto_error=False, description="An API key from `genbot keys create`.")


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    key_id: str  # the key's id as text, or "anonymous"
    name: str
    admin: bool


async def caller(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of this request, after the key check and the rate limit."""
    who = await _identify(ctx, credentials, client_address(request))
    await ctx.limiter.hit(who.key_id)
    return who


async def admin_caller(ctx: Annotated[ApiContext, Depends(context)], who: Annotated[Caller, Depends(caller)]) -> Caller:
    """The caller, who must hold an admin key (or be the unkeyed local caller, if so configured)."""
    if who.admin:
        return who
    if who.key_id == ANONYMOUS:
        raise ApiError(
            403, "admin routes need an admin API key (or [api] unkeyed_admin = true on loopback)", "permission_denied"
        )
    raise ApiError(403, f"API key {who.name!r} is not an admin key", "permission_denied")


async def _identify(ctx: ApiContext, credentials: HTTPAuthorizationCredentials | None, address: str) -> Caller:
    """The caller named by the Bearer key, or the anonymous local caller when keys are optional."""
    anonymous = Caller(ANONYMOUS, ANONYMOUS, admin=ctx.settings.unkeyed_admin)
    if credentials is None or not credentials.credentials:
        if ctx.settings.require_keys:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error")
        return anonymous
    key = await ctx.service.keys.authenticate(credentials.credentials)
    if key is None and not ctx.settings.require_keys:
        return anonymous  # a placeholder token ("sk-no-key", "ollama"): keys are optional here
    if key is None:
        # Counted in the database, so a guesser spreading over replicas meets one limit.
        await ctx.bad_keys.hit(address, "invalid API keys")
        raise ApiError(401, "invalid or revoked API key", "authentication_error")
    await _touch(ctx, key.id)
    return Caller(str(key.id), key.name, key.admin)


def client_address(request: Request) -> str:
    """The client's address (behind a proxy, uvicorn's --forwarded-allow-ips makes it the real one)."""
    return request.client.host if request.client else "unknown"


async def _touch(ctx: ApiContext, key_id: int) -> None:
    """Update the key's last_used_at, at most once per TOUCH_EVERY_S."""
    now = time.monotonic()
    if now - ctx.touched.get(key_id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
        ctx.touched[key_id] = now
        await ctx.service.keys.touch(key_id)


CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]

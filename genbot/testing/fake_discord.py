"""A fake Discord on loopback, for driving the real discord.py client in tests.

It speaks just enough of Discord's API for genbot's bot: the gateway websocket (plain JSON
text frames: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, and INTERACTION_CREATE /
MESSAGE_CREATE dispatches a test injects) and the REST routes the bot calls (login, command
sync, interaction callbacks, webhook follow-ups and edits, channel messages, attachment
downloads). Every REST call is recorded with its arrival time and the bytes of any file it
uploaded, and a route can be made to answer 429 with ``retry_after`` once, as Discord's rate
limiter does.

It enforces the Discord rules genbot must keep, answering as Discord does and recording a
``Violation``: one initial response per interaction (400, code 40060), message content of at
most 2,000 characters (400, code 50035), interaction tokens that expire 15 minutes after the
interaction (webhook routes answer 404, code 10015; the clock is injectable, see ``FakeClock``),
and edits of one message at least ``min_edit_interval`` apart (recorded only). Leaving the
``async with`` raises ``AssertionError`` when violations are left that a test did not take with
``take_violations()``, so any test breaking a rule fails. Every response carries Discord's
rate-limit headers (``X-RateLimit-*``), counted per bucket; a bucket used up answers 429.

There are two servers: ``GUILD_ID`` (with the admin role ``ADMIN_ROLE_ID``) and
``OTHER_GUILD_ID``; the application is owned by ``OWNER_ID``, or by a team (``team``).

The gateway serves shards as Discord does: ``GET /gateway/bot`` recommends ``shard_count``
shards, each connection identifies with ``shard: [id, count]`` (4010 Invalid Shard closes a
connection naming a shard outside its count), READY and GUILD_CREATE list only that shard's
guilds, and every event of a guild goes to the connection of shard ``(guild_id >> 22) % count``
(DMs to shard 0). With two shards the two servers land on shards 0 and 1. IDENTIFYs of one
rate-limit key (``shard_id % max_concurrency``) closer than ``identify_interval_s`` are
answered with op 9 Invalid Session, which the client must wait out and retry.

Usage::

    async with FakeDiscord() as fake:       # patches discord.http.Route.BASE and the gateway URL
        bot = GenbotBot(service, settings)
        task = asyncio.create_task(bot.start(FakeDiscord.TOKEN))
        await fake.wait_ready()
        interaction = await fake.slash("generate", {"model": "alpha", "prompt": "A"})
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import web

Json = dict[str, Any]
Handler = Callable[[web.Request, re.Match[str], Any], Awaitable[Any]]

MANAGE_GUILD = 1 << 5
MESSAGE_LIMIT = 2000  # Discord's limit on message content
TOKEN_LIFETIME_S = 15 * 60.0  # an interaction token's webhook works this long
ALREADY_ACKNOWLEDGED, INVALID_FORM_BODY, UNKNOWN_WEBHOOK, UNKNOWN_MESSAGE = 40060, 50035, 10015, 10008
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 31)  # view channel, send messages, use app commands
SUBCOMMAND, STRING, INTEGER, BOOLEAN, USER, NUMBER, ATTACHMENT = 1, 3, 4, 5, 6, 10, 11


@dataclass
class RecordedCall:
    """One REST request the bot made: when it arrived (time.monotonic()), what, and the answer."""

    at: float
    method: str
    path: str
    body: Any
    status: int = 200
    files: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # uploaded file name → its bytes


@dataclass(frozen=True)
class Violation:
    """A Discord rule the bot broke: which (Discord's error code, or 0 for pacing) and how."""

    code: int
    method: str
    path: str
    detail: str


class FakeClock:
    """A clock a test moves by hand (token expiry); ``FakeDiscord`` reads it as seconds."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Jump forward."""
        self.now += seconds


class DiscordError(Exception):
    """An error answer in Discord's shape (status, JSON code and message)."""

    def __init__(self, status: int, code: int, message: str, *, violation: bool = True) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.violation = status, code, message, violation


@dataclass
class Bucket:
    """One rate-limit bucket: requests counted in the current window."""

    name: str
    window_start: float
    used: int = 0


@dataclass
class GatewayShard:
    """One identified gateway connection: its shard and its own sequence numbers."""

    ws: web.WebSocketResponse
    shard_id: int
    count: int
    seq: int = 0

    async def send(self, event: str, data: Json) -> None:
        """One dispatch (op 0) on this connection."""
        self.seq += 1
        await self.ws.send_json({"op": 0, "t": event, "s": self.seq, "d": data})


@dataclass
class InjectedInteraction:
    """An interaction the fake dispatched; its token addresses the replies."""

    id: str
    token: str
    sent_at: float
    payload: Json


@dataclass
class FakeMessage:
    """A message as the fake stores it (content, embeds, components, attached file names)."""

    id: str
    channel_id: str
    content: str = ""
    embeds: list[Json] = field(default_factory=list)
    components: list[Json] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    flags: int = 0
    edits: list[float] = field(default_factory=list)  # arrival times of PATCHes


def user_payload(user_id: str, name: str, *, bot: bool = False) -> Json:
    """A Discord user object."""
    return {
        "id": user_id,
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


class FakeDiscord:
    """The fake server: start it with ``async with``; inject events; inspect ``calls`` and ``messages``."""

    TOKEN = "fake.discord.token"
    APP_ID = "100000000000000001"
    GUILD_ID = "100000000000000002"
    CHANNEL_ID = "100000000000000003"
    ADMIN_ROLE_ID = "100000000000000004"
    ADMIN_ROLE_NAME = "genbot-admin"
    OTHER_GUILD_ID = "100000000004194309"  # a second server (no admin role); on shard 1 of 2
    OTHER_CHANNEL_ID = "100000000000000006"
    OWNER_ID = "300000000000000099"  # the application's owner (and the first server's owner)

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_edit_interval: float = 1.0,
        bucket_limit: int = 10,
        bucket_window_s: float = 1.0,
        shard_count: int = 1,
        max_concurrency: int = 1,
        identify_interval_s: float = 5.0,
    ) -> None:
        self.clock = clock  # token expiry only; arrival times are always time.monotonic()
        self.min_edit_interval = min_edit_interval
        self.bucket_limit, self.bucket_window_s = bucket_limit, bucket_window_s
        self.team: list[tuple[str, str]] | None = None  # (user id, role) when a team owns the app
        self.violations: list[Violation] = []
        self._acknowledged: set[str] = set()  # interaction ids with an initial response
        self._born: dict[str, float] = {}  # interaction token → when (clock) it was issued
        self._buckets: dict[str, Bucket] = {}
        self.calls: list[RecordedCall] = []
        self.messages: dict[str, FakeMessage] = {}
        self.files: dict[str, bytes] = {}  # name → bytes served at /files/<name> (attachment URLs)
        self.identified = asyncio.Event()
        self._ids = itertools.count(200000000000000000)
        self._originals: dict[str, str] = {}  # interaction token → message id of the original response
        self._ratelimits: list[tuple[str, re.Pattern[str], float]] = []
        self.shard_count, self.max_concurrency = shard_count, max_concurrency
        self.identify_interval_s = identify_interval_s
        self.shards: dict[int, GatewayShard] = {}  # shard id → its identified connection
        self._identified_at: dict[int, float] = {}  # rate-limit key → when its last IDENTIFY was accepted
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self.port = 0
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = self._route_table()

    # ----- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._install()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._uninstall()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if et is None and self.violations:
            listed = "\n".join(f"  {v.code} {v.method} {v.path}: {v.detail}" for v in self.violations)
            raise AssertionError(f"the bot broke Discord's rules:\n{listed}")

    def take_violations(self) -> list[Violation]:
        """The violations so far (a test that provokes them on purpose takes them)."""
        taken, self.violations = self.violations, []
        return taken

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def _install(self) -> None:
        """Point discord.py's REST base and default gateway at this server."""
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = f"{self.base}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{self.port}/gateway")

    def _uninstall(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until every shard has identified on the gateway (READY and GUILD_CREATE are sent)."""
        await asyncio.wait_for(self.identified.wait(), timeout)

    def reset_connection(self) -> None:
        """Forget the gateway client, so ``wait_ready`` waits for the next one (a restarted bot)."""
        self.identified = asyncio.Event()

    @staticmethod
    def shard_of(guild_id: str | int, shard_count: int) -> int:
        """The shard that receives a guild's events (Discord's formula)."""
        return (int(guild_id) >> 22) % shard_count

    def guilds_of(self, shard_id: int, shard_count: int) -> list[tuple[str, str]]:
        """(guild id, channel id) of the servers on one shard."""
        servers = [(self.GUILD_ID, self.CHANNEL_ID), (self.OTHER_GUILD_ID, self.OTHER_CHANNEL_ID)]
        return [(g, c) for g, c in servers if self.shard_of(g, shard_count) == shard_id]

    # ----- what tests inject -------------------------------------------------------------------

    def rate_limit_once(self, method: str, path_regex: str, retry_after: float) -> None:
        """Answer the next ``method`` request whose path matches ``path_regex`` with 429."""
        self._ratelimits.append((method, re.compile(path_regex), retry_after))

    @staticmethod
    def member(user_id: str, name: str, *, admin: bool = False, roles: list[str] | None = None) -> Json:
        """A guild member object for an interaction (Manage Server when ``admin``)."""
        permissions = MEMBER_PERMISSIONS | (MANAGE_GUILD if admin else 0)
        return {
            "user": user_payload(user_id, name),
            "roles": roles or [],
            "joined_at": datetime.now(UTC).isoformat(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(permissions),
        }

    async def slash(
        self,
        name: str,
        options: list[Json] | None = None,
        *,
        member: Json | None = None,
        resolved: Json | None = None,
        guild_id: str | None = None,
    ) -> InjectedInteraction:
        """Dispatch an application command (type 2) from ``member`` (default: a plain user) in a server."""
        data: Json = {"id": str(next(self._ids)), "name": name, "type": 1, "options": options or []}
        if resolved:
            data["resolved"] = resolved
        return await self._interaction(2, data, member, guild_id=guild_id or self.GUILD_ID)

    async def autocomplete(self, name: str, options: list[Json], *, member: Json | None = None) -> InjectedInteraction:
        """Dispatch an autocomplete request (type 4); mark the option being typed with ``"focused": True``."""
        data: Json = {"id": str(next(self._ids)), "name": name, "type": 1, "options": options}
        return await self._interaction(4, data, member)

    async def click(self, custom_id: str, message_id: str, *, member: Json | None = None) -> InjectedInteraction:
        """Dispatch a button press (type 3) on a stored message."""
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interaction(3, data, member, message=self._message_payload(self.messages[message_id]))

    async def post_message(self, content: str, *, author: Json, mentions: list[Json] | None = None) -> str:
        """Dispatch MESSAGE_CREATE in the test channel; returns the message id."""
        mid = str(next(self._ids))
        message = {
            **self._base_message(mid, self.CHANNEL_ID, content),
            "author": author["user"],
            "member": {k: v for k, v in author.items() if k != "user"},
            "guild_id": self.GUILD_ID,
            "mentions": mentions or [],
        }
        await self._dispatch("MESSAGE_CREATE", message)
        return mid

    def attachment(self, name: str, content: bytes, content_type: str = "text/plain; charset=utf-8") -> Json:
        """Serve ``content`` at a URL and return the attachment object that points at it."""
        self.files[name] = content
        aid = str(next(self._ids))
        url = f"{self.base}/files/{name}"
        return {
            "id": aid,
            "filename": name,
            "size": len(content),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    async def _interaction(
        self, kind: int, data: Json, member: Json | None, message: Json | None = None, *, guild_id: str | None = None
    ) -> InjectedInteraction:
        """Build and dispatch an INTERACTION_CREATE (in ``guild_id``, default the first server)."""
        iid, token = str(next(self._ids)), f"itoken-{next(self._ids)}"
        gid = guild_id or self.GUILD_ID
        cid = self.CHANNEL_ID if gid == self.GUILD_ID else self.OTHER_CHANNEL_ID
        self._born[token] = self.clock()
        payload: Json = {
            "id": iid,
            "application_id": self.APP_ID,
            "type": kind,
            "data": data,
            "guild_id": gid,
            "channel_id": cid,
            "channel": {"id": cid, "type": 0, "guild_id": gid, "name": "general"},
            "member": member or self.member("300000000000000001", "alice"),
            "token": token,
            "version": 1,
            "app_permissions": str(MEMBER_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": gid},
            "context": 0,
            "attachment_size_limit": 25 * 1024 * 1024,
        }
        if message is not None:
            payload["message"] = message
        sent = time.monotonic()
        await self._dispatch("INTERACTION_CREATE", payload)
        return InjectedInteraction(iid, token, sent, payload)

    # ----- what tests inspect ------------------------------------------------------------------

    def calls_to(self, method: str, path_regex: str) -> list[RecordedCall]:
        """Recorded calls of ``method`` whose path matches ``path_regex``."""
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    def original(self, interaction: InjectedInteraction) -> FakeMessage | None:
        """The interaction's original response message, once it exists."""
        mid = self._originals.get(interaction.token)
        return self.messages.get(mid) if mid else None

    def followups(self, interaction: InjectedInteraction) -> list[FakeMessage]:
        """Messages created through the interaction's webhook, oldest first."""
        ids = [
            c.body["id"]
            for c in self.calls
            if c.method == "POST" and c.path.endswith(f"/webhooks/{self.APP_ID}/{interaction.token}") and c.body
        ]
        return [self.messages[i] for i in ids if i in self.messages]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Poll ``predicate`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise TimeoutError("condition not met within timeout")

    # ----- gateway -----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        """HELLO, then answer IDENTIFY with READY + the shard's GUILD_CREATEs and heartbeats with ACKs."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        try:
            async for frame in ws:
                message = json.loads(frame.data)
                if message["op"] == 1:
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif message["op"] == 2:
                    await self._identify(ws, message["d"])
        finally:
            self._sockets.discard(ws)
            for sid, shard in list(self.shards.items()):
                if shard.ws is ws:
                    del self.shards[sid]
        return ws

    async def _identify(self, ws: web.WebSocketResponse, payload: Json) -> None:
        """Check the shard and the identify rate limit, then send READY and the shard's guilds."""
        shard_id, count = payload.get("shard") or [0, 1]
        if not (isinstance(count, int) and isinstance(shard_id, int) and 0 <= shard_id < count):
            await ws.close(code=4010, message=b"Invalid shard.")
            return
        key, now = shard_id % self.max_concurrency, time.monotonic()
        last = self._identified_at.get(key)
        if last is not None and now - last < self.identify_interval_s:
            await ws.send_json({"op": 9, "d": False, "s": None, "t": None})  # too soon: Invalid Session
            return
        self._identified_at[key] = now
        shard = self.shards[shard_id] = GatewayShard(ws, shard_id, count)
        guilds = self.guilds_of(shard_id, count)
        await shard.send("READY", self._ready(shard_id, count, [g for g, _ in guilds]))
        for guild_id, channel_id in guilds:
            await shard.send("GUILD_CREATE", self._guild(guild_id, channel_id))
        if all(s in self.shards and self.shards[s].count == count for s in range(count)):
            self.identified.set()

    async def _dispatch(self, event: str, data: Json) -> None:
        """Send one dispatch (op 0) to the shard of the event's guild (DMs: shard 0)."""
        counts = {shard.count for shard in self.shards.values()}
        if len(counts) != 1:
            raise RuntimeError(f"no client (or clients of different shard counts {counts}) on the fake gateway")
        guild_id = data.get("guild_id")
        shard_id = self.shard_of(guild_id, counts.pop()) if guild_id else 0
        if shard_id not in self.shards:
            raise RuntimeError(f"shard {shard_id} (of guild {guild_id}) is not connected to the fake gateway")
        await self.shards[shard_id].send(event, data)

    def _ready(self, shard_id: int, count: int, guild_ids: list[str]) -> Json:
        return {
            "v": 10,
            "user": user_payload(self.APP_ID, "genbot", bot=True),
            "guilds": [{"id": g, "unavailable": True} for g in guild_ids],
            "session_id": f"fake-session-{shard_id}",
            "shard": [shard_id, count],
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
            "application": {"id": self.APP_ID, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    def _guild(self, guild_id: str, channel_id: str) -> Json:
        role = {"hoist": False, "managed": False, "mentionable": False, "color": 0, "flags": 0}
        everyone = {**role, "id": guild_id, "name": "@everyone", "permissions": str(MEMBER_PERMISSIONS), "position": 0}
        admin = {**role, "id": self.ADMIN_ROLE_ID, "name": self.ADMIN_ROLE_NAME, "permissions": "0", "position": 1}
        first = guild_id == self.GUILD_ID
        return {
            "id": guild_id,
            "name": "Fake Guild" if first else "Other Guild",
            "owner_id": self.OWNER_ID if first else "300000000000000098",
            "roles": [everyone, admin] if first else [everyone],
            "channels": [{"id": channel_id, "type": 0, "name": "general", "position": 0, "permission_overwrites": []}],
            "members": [],
            "member_count": 3,
            "emojis": [],
            "stickers": [],
            "features": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "voice_states": [],
            "presences": [],
            "large": False,
            "unavailable": False,
            "joined_at": datetime.now(UTC).isoformat(),
            "premium_tier": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
        }

    # ----- REST --------------------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.Response:
        """Serve an attachment's bytes (Attachment.read() downloads from here)."""
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name], content_type="application/octet-stream")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        """Record the call, apply rate limits (injected 429s, buckets), then route it."""
        at = time.monotonic()
        path = "/" + request.match_info["tail"]
        body, uploads = await _read_body(request)
        files = [name for name, _ in uploads]
        call = RecordedCall(at, request.method, path, body, files=files, uploads=dict(uploads))
        self.calls.append(call)
        route = self._match(request.method, path)
        bucket = self._bucket(request.method, path, route, at)
        headers = self._ratelimit_headers(bucket, at)
        limited = self._take_ratelimit(request.method, path)
        if limited is None and bucket.used > self.bucket_limit:
            limited = float(headers["X-RateLimit-Reset-After"])
        if limited is not None:
            call.status = 429
            payload = {"message": "You are being rate limited.", "retry_after": limited, "global": False}
            headers.update({"Via": "1.1 google", "Retry-After": str(limited), "X-RateLimit-Scope": "user"})
            return _json(payload, status=429, headers=headers)
        if route is None:
            call.status = 404
            return _json({"message": f"fake Discord: no route {request.method} {path}", "code": 0}, status=404)
        handler, match = route
        try:
            result = await handler(request, match, (body, files, at))
        except DiscordError as e:
            call.status = e.status
            if e.violation:
                self.violations.append(Violation(e.code, request.method, path, e.message))
            return _json({"message": e.message, "code": e.code}, status=e.status, headers=headers)
        call.body = body
        call.status = 204 if result is None else 200
        return web.Response(status=204, headers=headers) if result is None else _json(result, headers=headers)

    def _match(self, method: str, path: str) -> tuple[Handler, re.Match[str]] | None:
        """The handler of a route and its match, or None."""
        for m, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and m == method:
                return handler, match
        return None

    def _bucket(self, method: str, path: str, route: tuple[Handler, re.Match[str]] | None, at: float) -> Bucket:
        """Count the request in its bucket (the route and its major parameter, as Discord groups them)."""
        major = re.search(r"/(?:channels|webhooks/\d+|interactions/\d+)/([^/]+)", path)
        name = f"{method} {route[1].re.pattern if route else path} {major[1] if major else ''}"
        bucket = self._buckets.get(name)
        if bucket is None or at - bucket.window_start >= self.bucket_window_s:
            bucket = self._buckets[name] = Bucket(f"{abs(hash(name)):x}", at)
        bucket.used += 1
        return bucket

    def _ratelimit_headers(self, bucket: Bucket, at: float) -> dict[str, str]:
        """Discord's X-RateLimit-* headers for a request counted in ``bucket``."""
        reset_after = max(0.0, bucket.window_start + self.bucket_window_s - at)
        return {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(max(0, self.bucket_limit - bucket.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket.name,
        }

    def _take_ratelimit(self, method: str, path: str) -> float | None:
        """The retry_after of a pending injected 429 for this call (consumed), else None."""
        for i, (m, pattern, retry_after) in enumerate(self._ratelimits):
            if m == method and pattern.search(path):
                del self._ratelimits[i]
                return retry_after
        return None

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        wh = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/gateway(/bot)?", self._get_gateway),
            ("GET", r"/users/@me", self._get_me),
            ("GET", r"/oauth2/applications/@me", self._get_application),
            ("PUT", r"/applications/\d+(/guilds/\d+)?/commands", self._put_commands),
            ("GET", r"/applications/\d+(/guilds/\d+)?/commands", self._get_commands),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("GET", wh + r"/messages/(?P<mid>@original|\d+)", self._get_webhook_message),
            ("PATCH", wh + r"/messages/(?P<mid>@original|\d+)", self._edit_webhook_message),
            ("DELETE", wh + r"/messages/(?P<mid>@original|\d+)", self._delete_webhook_message),
            ("POST", wh, self._post_webhook_message),
            ("POST", r"/channels/(?P<cid>\d+)/messages", self._post_channel_message),
            ("PATCH", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._edit_channel_message),
            ("POST", r"/channels/(?P<cid>\d+)/typing", self._no_content),
        ]
        return [(m, re.compile(p), h) for m, p, h in table]

    async def _get_gateway(self, request: web.Request, match: re.Match[str], _: Any) -> Json:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": self.max_concurrency}
        return {"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": self.shard_count, "session_start_limit": limit}

    async def _get_me(self, request: web.Request, match: re.Match[str], _: Any) -> Json:
        return user_payload(self.APP_ID, "genbot", bot=True)

    async def _get_application(self, request: web.Request, match: re.Match[str], _: Any) -> Json:
        owner = user_payload(self.OWNER_ID, "owner")
        app: Json = {
            "id": self.APP_ID,
            "name": "genbot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner,
            "verify_key": "0" * 64,
            "flags": 0,
        }
        if self.team is not None:
            app["team"] = self._team()
        return app

    def _team(self) -> Json:
        """The team that owns the application (``self.team``: user id and role of each member)."""
        members = [
            {"user": user_payload(uid, f"member{i}"), "team_id": "1", "membership_state": 2, "role": role}
            for i, (uid, role) in enumerate(self.team or [])
        ]
        return {"id": "1", "name": "genbot team", "icon": None, "owner_user_id": self.OWNER_ID, "members": members}

    async def _put_commands(self, request: web.Request, match: re.Match[str], ctx: Any) -> list[Json]:
        return [{**cmd, "id": str(next(self._ids)), "application_id": self.APP_ID, "version": "1"} for cmd in ctx[0]]

    async def _get_commands(self, request: web.Request, match: re.Match[str], _: Any) -> list[Json]:
        return []

    async def _no_content(self, request: web.Request, match: re.Match[str], _: Any) -> None:
        return None

    async def _callback(self, request: web.Request, match: re.Match[str], ctx: Any) -> Json:
        """Interaction responses: 4 message, 5 deferred message, 6 deferred update, 7 update, 8 autocomplete."""
        body, files, _ = ctx
        kind, data = body["type"], body.get("data") or {}
        token = match["token"]
        if match["iid"] in self._acknowledged:
            raise DiscordError(400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        _check_content(data)
        self._acknowledged.add(match["iid"])
        info: Json = {"id": match["iid"], "type": 2}
        resource: Json = {"type": kind}
        if kind in (4, 5):
            msg = self._store(FakeMessage(str(next(self._ids)), self.CHANNEL_ID, flags=data.get("flags", 0)))
            _apply(msg, data, files)
            self._originals[token] = msg.id
            info.update(response_message_id=msg.id, response_message_loading=kind == 5)
            info["response_message_ephemeral"] = bool(msg.flags & 64)
            if kind == 4:
                resource["message"] = self._message_payload(msg)
        return {"interaction": info, "resource": resource}

    def _store(self, msg: FakeMessage) -> FakeMessage:
        self.messages[msg.id] = msg
        return msg

    def _check_token(self, token: str) -> None:
        """An interaction token's webhook lives 15 minutes (10015 Unknown Webhook afterwards)."""
        born = self._born.get(token)
        if born is None or self.clock() - born > TOKEN_LIFETIME_S:
            raise DiscordError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")

    def _webhook_target(self, match: re.Match[str]) -> FakeMessage:
        """The message a webhook route addresses (@original resolves through the token)."""
        self._check_token(match["token"])
        mid = match["mid"]
        if mid == "@original":
            mid = self._originals.get(match["token"], "")
        if mid not in self.messages:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message", violation=False)
        return self.messages[mid]

    def _check_pace(self, msg: FakeMessage, at: float, path: str) -> None:
        """Record a violation when an edit arrives closer than ``min_edit_interval`` to the last one."""
        if msg.edits and at - msg.edits[-1] < self.min_edit_interval:
            detail = f"edited {at - msg.edits[-1]:.3f} s after the previous edit of message {msg.id}"
            self.violations.append(Violation(0, "PATCH", path, detail))

    async def _get_webhook_message(self, request: web.Request, match: re.Match[str], _: Any) -> Json:
        return self._message_payload(self._webhook_target(match))

    async def _edit_webhook_message(self, request: web.Request, match: re.Match[str], ctx: Any) -> Json:
        msg = self._webhook_target(match)
        _check_content(ctx[0])
        self._check_pace(msg, ctx[2], request.path)
        msg.edits.append(ctx[2])
        _apply(msg, ctx[0], ctx[1])
        return self._message_payload(msg)

    async def _delete_webhook_message(self, request: web.Request, match: re.Match[str], _: Any) -> None:
        self.messages.pop(self._webhook_target(match).id, None)
        return None

    async def _post_webhook_message(self, request: web.Request, match: re.Match[str], ctx: Any) -> Json:
        body, files, _ = ctx
        self._check_token(match["token"])
        _check_content(body)
        msg = self._store(FakeMessage(str(next(self._ids)), self.CHANNEL_ID, flags=body.get("flags", 0)))
        _apply(msg, body, files)
        payload = self._message_payload(msg)
        body["id"] = msg.id  # so followups() can find the messages a token created
        return payload

    async def _post_channel_message(self, request: web.Request, match: re.Match[str], ctx: Any) -> Json:
        body, files, _ = ctx
        _check_content(body)
        msg = self._store(FakeMessage(str(next(self._ids)), match["cid"]))
        _apply(msg, body, files)
        body["id"] = msg.id
        return self._message_payload(msg)

    async def _edit_channel_message(self, request: web.Request, match: re.Match[str], ctx: Any) -> Json:
        msg = self.messages.get(match["mid"])
        if msg is None:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message", violation=False)
        _check_content(ctx[0])
        self._check_pace(msg, ctx[2], request.path)
        msg.edits.append(ctx[2])
        _apply(msg, ctx[0], ctx[1])
        return self._message_payload(msg)

    def _base_message(self, mid: str, channel_id: str, content: str) -> Json:
        return {
            "id": mid,
            "channel_id": channel_id,
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": [],
        }

    def _message_payload(self, msg: FakeMessage) -> Json:
        payload = self._base_message(msg.id, msg.channel_id, msg.content)
        attachments = [
            {"id": str(i + 1), "filename": f, "size": 1, "url": f"{self.base}/files/{f}", "proxy_url": ""}
            for i, f in enumerate(msg.files)
        ]
        payload.update(
            author=user_payload(self.APP_ID, "genbot", bot=True),
            embeds=msg.embeds,
            components=msg.components,
            flags=msg.flags,
            attachments=attachments,
            application_id=self.APP_ID,
        )
        return payload


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json`` (discord.py compares it whole)."""
    response = web.Response(text=json.dumps(data), status=status, headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


def _check_content(body: Any) -> None:
    """Discord refuses content over 2,000 characters (50035 Invalid Form Body)."""
    content = body.get("content") if isinstance(body, dict) else None
    if isinstance(content, str) and len(content) > MESSAGE_LIMIT:
        message = f"Invalid Form Body: content: Must be {MESSAGE_LIMIT} or fewer in length (got {len(content)})."
        raise DiscordError(400, INVALID_FORM_BODY, message)


def _apply(msg: FakeMessage, body: Json, files: list[str]) -> None:
    """Apply a create/edit body to a stored message (only the fields present change)."""
    if "content" in body:
        msg.content = body["content"] or ""
    if "embeds" in body:
        msg.embeds = body["embeds"] or []
    if "components" in body:
        msg.components = body["components"] or []
    if files:
        msg.files.extend(files)


async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
    """The JSON body (or the payload_json part of a multipart body) and any uploaded files (name, bytes)."""
    if request.content_type.startswith("multipart/"):
        body: Any = {}
        files: list[tuple[str, bytes]] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":  # type: ignore[union-attr]
                body = json.loads(await part.text())  # type: ignore[union-attr]
            elif part.filename:  # type: ignore[union-attr]
                files.append((part.filename, bytes(await part.read())))  # type: ignore[union-attr]
        return body, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), []

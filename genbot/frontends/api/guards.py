"""Checks every request passes before any route sees it: the Host header, and text the database can store.

``AllowedHosts`` stops DNS rebinding: a page on ``attacker.example`` that resolves to 127.0.0.1
would otherwise reach a keyless loopback server with the user's browser. ``CleanInput`` refuses,
in one place, what no route can store or mean: NUL or invalid UTF-8 in the path or query, and
JSON bodies with NUL, lone surrogates, NaN/Infinity, giant integers or deep nesting. A body
sent as a form or plain text that parses as a JSON object or array is read as JSON (``curl -d``
labels every body ``application/x-www-form-urlencoded``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genbot.frontends.api.errors import error_response

MAX_INT_DIGITS = 40  # far past any field's range (2**63 has 19 digits), far below Python's 4,300-digit cap
MAX_DEPTH = 64  # JSON nesting: no route takes more than a few levels
# Content types whose bodies are read as JSON when they parse as JSON (curl -d, fetch with a string).
LOOSE_JSON_TYPES = ("application/x-www-form-urlencoded", "text/plain")


class AllowedHosts:
    """Answer 400 unless the Host header names loopback, the bind address or a configured host."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host.lower() for host in allowed}
        self.any = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a foreign Host before routing (covers /healthz, /metrics and streams alike)."""
        if scope["type"] != "http" or self.any or self.accepts(_header(scope, b"host")):
            await self.app(scope, receive, send)
            return
        await error_response(400, "invalid Host header (see [api] allowed_hosts)", "invalid_host")(scope, receive, send)

    def accepts(self, header: str) -> bool:
        """Whether a Host header value (name, optional port) is allowed."""
        name = host_name(header)
        return bool(name) and (name in self.allowed or is_loopback_name(name))


def host_name(header: str) -> str:
    """The host name of a Host header without its port, lower case ("[::1]:8000" → "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback_name(name: str) -> bool:
    """Whether ``name`` is localhost or a loopback address literal."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost could resolve anywhere


def _header(scope: Scope, name: bytes) -> str:
    """One request header as text ("" if absent)."""
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


class BadInput(ValueError):
    """Request text no route can store or mean."""


class CleanInput:
    """Answer 400 for NUL or invalid UTF-8 in the path or query and for hostile JSON bodies."""

    def __init__(self, app: ASGIApp, raw_body_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.raw_body_prefixes = raw_body_prefixes  # routes reading their own (non-JSON, streamed) bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the URL, then (for JSON requests) the whole body, which is replayed to the app unchanged."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_url(scope.get("raw_path") or scope["path"].encode(), scope.get("query_string", b""))
        except BadInput as e:
            await error_response(400, str(e), "invalid_request_error")(scope, receive, send)
            return
        if not self.reads_json(scope):
            if not self.may_be_json(scope):
                await self.app(scope, receive, send)
                return
            body, more = await _read_body(receive)
            if not _parses_as_json(body):
                await self.app(scope, _replay(body, more, receive), send)
                return
            scope = _as_json(scope)  # curl -d sends JSON as a form: read it as what it is
        else:
            body, more = await _read_body(receive)
        try:
            check_json(body)
        except BadInput as e:
            await error_response(400, str(e), "invalid_request_error")(scope, receive, send)
            return
        await self.app(scope, _replay(body, more, receive), send)

    def may_be_json(self, scope: Scope) -> bool:
        """Whether a body sent as a form or plain text may be JSON (curl's ``-d`` says form-urlencoded)."""
        if scope["method"] in ("GET", "HEAD") or scope["path"].startswith(self.raw_body_prefixes):
            return False
        kind = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
        return kind in LOOSE_JSON_TYPES

    def reads_json(self, scope: Scope) -> bool:
        """Whether the request's body is JSON for the app (uploads are streamed to disk, never buffered here)."""
        if scope["method"] in ("GET", "HEAD") or scope["path"].startswith(self.raw_body_prefixes):
            return False
        return _is_json(_header(scope, b"content-type"))


def _parses_as_json(body: bytes) -> bool:
    """Whether ``body`` is a JSON object or array (what every JSON route takes)."""
    stripped = body.lstrip()
    if not stripped.startswith((b"{", b"[")):
        return False
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def _as_json(scope: Scope) -> Scope:
    """``scope`` with its content type replaced by ``application/json``."""
    headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def check_url(raw_path: bytes, query: bytes) -> None:
    """Raise BadInput if the path or query, percent-decoded, hold NUL or invalid UTF-8."""
    for part, what in ((raw_path, "path"), (query.replace(b"+", b" "), "query")):
        decoded = unquote_to_bytes(part)
        if b"\x00" in decoded:
            raise BadInput(f"the {what} must not contain NUL characters")
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"the {what} must be valid UTF-8 (no lone surrogates)") from None


def check_json(body: bytes) -> None:
    """Raise BadInput for a JSON body no route should see; malformed JSON is left to the schema (422)."""
    if not body.strip():
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the body must be UTF-8 JSON") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except json.JSONDecodeError:
        return  # FastAPI answers malformed JSON with its own 422
    except RecursionError:
        raise BadInput(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    _check_value(value, 0)


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON numbers (Python's json accepts them)."""
    raise BadInput(f"{name} is not a valid JSON number")


def _bounded_int(digits: str) -> int:
    """An integer of at most MAX_INT_DIGITS digits (bigger ones cost CPU and fit no field)."""
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise BadInput(f"integer with {len(digits)} digits is out of range")
    return int(digits)


def _check_value(value: Any, depth: int) -> None:
    """Walk the decoded JSON: bounded depth, every string and key storable."""
    if depth > MAX_DEPTH:
        raise BadInput(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_value(item, depth + 1)


def _check_text(text: str) -> None:
    """Raise BadInput for NUL or a lone surrogate (PostgreSQL and UTF-8 refuse them)."""
    if "\x00" in text:
        raise BadInput("JSON strings must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("JSON strings must be valid Unicode (no lone surrogates)") from None


def _is_json(content_type: str) -> bool:
    """Whether a request body is parsed as JSON (FastAPI also parses bodies sent without a type)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or kind == "application/json" or kind.endswith("+json")


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole body (the size cap outside this middleware bounds it) and any non-body message seen."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), [message]  # a disconnect: pass it on after the body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), []


def _replay(body: bytes, pending: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read body, then the rest of the connection's messages."""
    queue: list[Message] = [{"type": "http.request", "body": body, "more_body": False}, *pending]

    async def replay() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replay

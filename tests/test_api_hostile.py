"""Hostile input against a real server on loopback (SQLite, and PostgreSQL where configured).

Every route gets every field replaced by wrong types, huge and negative numbers, NaN, lone
surrogates, NUL and path-like text, plus hostile paths, queries, headers and raw bodies: what
schemathesis does not generate. No request may get a 5xx or a dropped connection, every error
must have the documented body, and a refused request must store nothing (generations, jobs,
corpora and API keys are counted around each one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from genbot.config import ApiSettings
from genbot.service import GenbotService
from genbot.storage.tables import ApiKey, Corpus, Generation, Job
from tests.helpers import api_server, as_curl

HOSTILE: list[Any] = [
    None, True, "", "1", -1, 0, 2**31, 2**63, -(2**63) - 1, 10**39, 10**45, 1.5, 1e308, -1e-308,
    float("nan"), float("inf"), float("-inf"), "x" * 20_000, "\x00", "a\x00b", "\ud800", "x\udfff",
    "../../etc/passwd", "/abs", "..\\..\\boot.ini", "²", "١٢", [], [None], ["\x00"], {}, {"\ud800": 1},
]  # fmt: skip

# Each JSON route with a body it accepts; every field of it is replaced by each hostile value in turn.
JSON_ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/generate", {"model": "alpha", "prompt": "a", "length": 3, "seed": 1, "stop": ["zz"], "top_k": 5}),
    ("/v1/inspect", {"model": "alpha", "text": "ROMEO", "layer": 0, "unit": 1, "kind": "h", "find": "O"}),
    ("/v1/completions", {"model": "alpha", "prompt": "a", "max_tokens": 3, "stop": "zz", "user": "u"}),
    ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": "a"}], "max_tokens": 3}),
    ("/v1/admin/jobs", {"model": "alpha", "corpus": "plays", "steps": 1, "source": "active", "options": {}}),
    ("/v1/admin/models/alpha/activate", {"version": 1}),
]
PATH_VALUES = [
    "-1", "0", "2147483648", "9223372036854775808", "99999999999999999999", "1e3", "NaN", "%00", "a%00b",
    "..%2F..%2Fetc%2Fpasswd", "%2Fabs", "%ED%A0%80", "%C0%AF", "%FF", "x" * 300, "..", "%2E%2E",
]  # fmt: skip
PATH_ROUTES = [
    ("GET", "/v1/admin/corpora/{}"),
    ("PUT", "/v1/admin/corpora/{}"),
    ("GET", "/v1/admin/jobs/{}"),
    ("POST", "/v1/admin/jobs/{}/cancel"),
    ("GET", "/v1/admin/models/{}/versions"),
    ("POST", "/v1/admin/models/{}/activate"),
]
QUERY_VALUES = [*PATH_VALUES, "inf", "1" + "0" * 50, "+", "%20"]
QUERY_ROUTES = [
    ("GET", "/v1/generations", ["model", "search", "q", "limit", "offset", "before_id"]),
    ("GET", "/v1/admin/jobs", ["status", "model", "limit"]),
    ("PUT", "/v1/admin/corpora/hostile", ["licence", "description"]),
    ("GET", "/v1/generators", ["x"]),
]
RAW_BODIES: list[bytes] = [
    b"", b"{", b"[]", b'"text"', b"null", b"1" * 5000, b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"\xff\xfe{\x00}", b"\xef\xbb\xbf{}", b'{"model": "alpha", "model": "beta"}', b'{"model": "\xed\xa0\x80"}',
    b'{"model": "alpha", "prompt": "\\ud800\\udc00\\ud800"}', b'{"model": "alpha", "length": -0}',
    b'{"model": "alpha", "seed": 1e400}', b'{"model": "alpha", "temperature": -Infinity}',
]  # fmt: skip
DOCUMENTED = {200, 201, 400, 401, 403, 404, 405, 413, 422, 429}


@dataclass
class Probe:
    """Sends requests to the server and notes every one that breaks a rule."""

    http: httpx.AsyncClient
    service: GenbotService
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    rows: tuple[int, ...] | None = None  # stored rows after the last request

    async def send(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, Any] | None = None
    ) -> None:
        """One request; a failure is noted with the curl line that repeats it."""
        headers = {"content-type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
        before = self.rows if self.rows is not None else await stored_rows(self.service)
        self.sent += 1
        try:
            response = await self.http.request(method, path, content=body, headers=headers)
        except httpx.TransportError as e:
            self.fail(f"connection dropped ({e!r})", method, path, body, headers)
            return
        problem = check_response(response)
        self.rows = await stored_rows(self.service)  # one count per request: the next one's "before"
        if problem is None and response.status_code >= 400 and self.rows != before:
            problem = f"refused with {response.status_code} but stored rows"
        if problem:
            self.fail(f"{problem}: {response.text[:300]}", method, path, body, headers)

    def fail(self, why: str, method: str, path: str, body: bytes | None, headers: dict[str, Any]) -> None:
        """Note a broken rule with the request that caused it."""
        shown = {k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in headers.items()}
        self.failures.append(f"{why}\n    {as_curl(method, str(self.http.base_url) + path, shown, body)}")


def check_response(response: httpx.Response) -> str | None:
    """What is wrong with a response: a 5xx, an undocumented status or an error body of another shape."""
    if response.status_code not in DOCUMENTED:
        return f"status {response.status_code}"
    if response.status_code < 400:
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return "error without the documented body"
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return "error without the documented body"
    return None


async def stored_rows(service: GenbotService) -> tuple[int, ...]:
    """Rows in the tables a request could fill: generations, jobs, corpora, API keys."""
    counts = [select(func.count()).select_from(table).scalar_subquery() for table in (Generation, Job, Corpus, ApiKey)]
    async with service.db.read() as session:  # type: ignore[union-attr]
        return tuple((await session.execute(select(*counts))).one())


def field_cases(base: dict[str, Any]) -> Iterator[bytes]:
    """``base`` with each field (and nested field, and an unknown one) replaced by each hostile value."""
    for value in HOSTILE:
        for name in [*base, "unknown_field"]:
            yield dump(base | {name: value})
        for name, inner in base.items():
            if isinstance(inner, list) and inner and isinstance(inner[0], dict):  # chat messages
                for key in inner[0]:
                    yield dump(base | {name: [inner[0] | {key: value}]})
            elif isinstance(inner, list | dict):  # stop lists, options
                yield dump(base | {name: [value] if isinstance(inner, list) else {"lr": value, str(value): 1}})


def dump(body: dict[str, Any]) -> bytes:
    """JSON text as a hostile client writes it: NaN and Infinity bare, lone surrogates as escapes."""
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture
async def probe(plugins_dir: Path, db_url: str, corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A probe against a fresh server on ``db_url`` with corpus ``plays`` registered."""
    from genbot.storage.migrate import upgrade_database

    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("GENBOT_SAMPLING__MAX_LENGTH", "50")
    monkeypatch.setenv("GENBOT_SAMPLING__LENGTH", "3")
    await upgrade_database(db_url)
    settings = ApiSettings(rate_per_minute=0, bad_keys_per_minute=0, unkeyed_admin=True)
    async with api_server(settings) as (url, service), httpx.AsyncClient(base_url=url, timeout=30) as http:
        await service.corpora.add("plays", [corpus_file])
        yield Probe(http, service)


async def test_hostile_fields_get_documented_4xx_and_store_nothing(probe: Probe) -> None:
    for path, base in JSON_ROUTES:
        for body in field_cases(base):
            await probe.send("POST", path, body)
        for raw in RAW_BODIES:
            await probe.send("POST", path, raw)
    assert not probe.failures, f"{len(probe.failures)} of {probe.sent} requests broke a rule:\n" + "\n".join(
        probe.failures[:20]
    )


async def test_hostile_paths_queries_and_headers(probe: Probe) -> None:
    for method, template in PATH_ROUTES:
        for value in PATH_VALUES:
            body = b'{"version": 1}' if template.endswith("activate") else None
            await probe.send(method, template.format(value), body if method == "POST" else None)
    for method, path, names in QUERY_ROUTES:
        for name in names:
            for value in QUERY_VALUES:
                await probe.send(method, f"{path}?{name}={value}", b"text" if method == "PUT" else None)
    for headers in (
        {"authorization": "Bearer " + "x" * 8000},
        {"authorization": "Bearer gb_\u00ff\u00fe".encode("latin-1")},  # not ASCII
        {"authorization": "Basic YTpi"},
        {"authorization": "Bearer"},
        {"host": ""},
        {"host": "[::1"},
        {"host": "localhost:99999"},
        {"host": ":80"},
        {"content-type": "application/json; charset=utf-16"},
    ):
        for path in ("/healthz", "/metrics", "/v1/models", "/v1/admin/corpora"):
            await probe.send("GET", path, headers=headers)
    for big in (b"x" * (2 * 1024 * 1024),):  # past max_body_bytes: 413 unread
        await probe.send("POST", "/v1/generate", big)
    assert not probe.failures, f"{len(probe.failures)} of {probe.sent} requests broke a rule:\n" + "\n".join(
        probe.failures[:20]
    )


async def test_multipart_caption_fields(probe: Probe) -> None:
    """The image upload route (multipart, outside the JSON check) refuses hostile form fields too."""
    for name in ("model", "beam", "temperature", "seed", "count"):
        for value in ("\x00", "\ud800", "-1", "NaN", "inf", "99999999999999999999", "../../etc/passwd", "x" * 5000):
            before = await stored_rows(probe.service)
            files = {"image": ("a.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")}
            data = {name: value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")}
            response = await probe.http.post("/v1/caption", files=files, data=data)
            probe.sent += 1
            problem = check_response(response) or (
                "stored rows" if response.status_code >= 400 and await stored_rows(probe.service) != before else None
            )
            if problem:
                probe.failures.append(f"{problem}: POST /v1/caption {name}={value[:20]!r}: {response.text[:200]}")
    assert not probe.failures, "\n".join(probe.failures[:20])

"""The HTTP API against a real uvicorn server on loopback: native routes, SSE, errors, limits, keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from genbot.config import ApiSettings
from genbot.errors import ConfigError
from genbot.frontends.api.app import check_bind
from genbot.service import GenbotService
from tests.helpers import api_server, client, parse_sse, slow_down_model

_NOON = datetime(2027, 1, 15, 12, 0, 15, tzinfo=UTC).timestamp()


def fixed_noon() -> float:
    """15 s past noon UTC, always: tests of minute windows and daily quotas never cross a boundary."""
    return _NOON


@pytest.fixture
async def api(plugins_dir: Path) -> AsyncIterator[tuple[str, GenbotService]]:
    """A server with keys not required (loopback) over models alpha and beta."""
    async with api_server() as pair:
        yield pair


async def test_generators_lists_cards(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        body = (await c.get("/v1/generators")).json()
    names = {g["name"]: g for g in body["generators"]}
    assert set(names) == {"alpha", "beta"}
    assert names["alpha"]["status"] == "loaded"
    assert names["alpha"]["card"]["architecture"]["cell"] == "lstm"


async def test_generate_json_is_seeded_and_stored(api: tuple[str, GenbotService]) -> None:
    url, service = api
    req = {"model": "alpha", "prompt": "ROMEO:", "length": 40, "seed": 7, "temperature": 0.9}
    async with client(url) as c:
        a = (await c.post("/v1/generate", json=req)).json()
        b = (await c.post("/v1/generate", json=req)).json()
    assert len(a["text"]) == 40 and a["text"] == b["text"]
    assert (a["status"], a["seed"], a["model"], a["version"]) == ("completed", 7, "alpha", 1)
    assert a["stats"]["eval_count"] == 40 and a["stats"]["done_reason"] == "length"
    rows = await service.history(api_key_id="anonymous")
    assert [r.id for r in rows] == [b["id"], a["id"]]
    assert rows[0].output == b["text"] and rows[0].frontend == "api"


async def test_generate_stream_sends_tokens_then_done(api: tuple[str, GenbotService]) -> None:
    url, service = api
    req = {"model": "beta", "prompt": "JULIET:", "length": 60, "seed": 3, "stream": True}
    async with client(url) as c:
        response = await c.post("/v1/generate", json=req)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"token"}
    text = "".join(d["text"] for e, d in events if e == "token")
    done = events[-1][1]
    assert len(text) == 60 and done["seed"] == 3 and done["status"] == "completed"
    assert done["stats"]["eval_count"] == 60 and "total_duration" in done["stats"]
    [row] = await service.history()
    assert (row.id, row.output, row.status) == (done["id"], text, "completed")


async def test_client_disconnect_cancels_the_generation(api: tuple[str, GenbotService]) -> None:
    url, service = api
    slow_down_model(service, "alpha")  # ~4 ms a character: the stream certainly outlasts the client
    req = {"model": "alpha", "prompt": "ROMEO:", "length": 5000, "stream": True}
    async with client(url) as c, c.stream("POST", "/v1/generate", json=req) as response:
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("event: token")
            if seen >= 3:
                break  # leaving the block closes the connection mid-stream
    rows = await _wait_for_final(service)
    assert rows[0].status == "cancelled"
    assert 0 < rows[0].chars < 5000


async def _wait_for_final(service: GenbotService, timeout: float = 10.0) -> list:
    """The history once no row is running any more."""
    for _ in range(int(timeout / 0.05)):
        rows = await service.history()
        if rows and all(r.status != "running" for r in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"still running after {timeout}s: {rows}")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "nope"}, 404, "unknown model"),
        ({"model": "alpha", "temperature": 50}, 400, "temperature"),
        ({"model": "alpha", "length": 10**6}, 400, "max_length"),
        ({"model": "alpha", "prompt": "x" * 5000}, 400, "prompt has"),
        ({"model": "alpha", "top_p": 0}, 422, "top_p"),
        ({"model": "alpha", "bogus": 1}, 422, "bogus"),
        ({"prompt": "no model"}, 422, "model"),
    ],
)
async def test_bad_requests_get_json_errors(
    api: tuple[str, GenbotService], body: dict, status: int, needle: str
) -> None:
    url, _ = api
    async with client(url) as c:
        response = await c.post("/v1/generate", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and set(error) == {"message", "type", "param", "code"}


async def test_unknown_route_and_bad_json_are_json_errors(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        missing = await c.get("/v1/nothing")
        bad = await c.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
        wrong_method = await c.delete("/v1/generate")
    assert missing.status_code == 404 and "error" in missing.json()
    assert bad.status_code == 422 and "error" in bad.json()
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


async def test_big_bodies_are_refused_with_413(plugins_dir: Path) -> None:
    async with api_server(ApiSettings(max_body_bytes=1000)) as (url, _), client(url) as c:
        declared = await c.post("/v1/generate", json={"model": "alpha", "prompt": "x" * 2000})

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"model": "alpha", "prompt": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        chunked = await c.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert "1,000 bytes" in response.json()["error"]["message"]


async def test_busy_engine_answers_503_with_retry_after(plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_ENGINE__MAX_STREAMS_PER_MODEL", "1")
    monkeypatch.setenv("GENBOT_ENGINE__MAX_QUEUE", "0")
    long = {"model": "alpha", "length": 5000, "stream": True}
    async with api_server() as (url, service), client(url) as c:
        slow_down_model(service, "alpha")  # the first stream is certainly still running at the second request
        async with c.stream("POST", "/v1/generate", json=long) as first:
            assert first.status_code == 200
            second = await c.post("/v1/generate", json={"model": "alpha", "length": 5})
            assert second.status_code == 503
            assert int(second.headers["retry-after"]) >= 1
            assert "busy" in second.json()["error"]["message"]


async def test_rate_limit_answers_429_with_retry_after(plugins_dir: Path) -> None:
    async with api_server(ApiSettings(rate_per_minute=2), clock=fixed_noon) as (url, _), client(url) as c:
        codes = [(await c.get("/v1/models")).status_code for _ in range(3)]
        limited = await c.get("/v1/models")
    assert codes == [200, 200, 429]
    assert int(limited.headers["retry-after"]) == 45
    assert "rate limit" in limited.json()["error"]["message"]


async def test_keys_scope_and_history(plugins_dir: Path) -> None:
    async with api_server(ApiSettings(require_keys=True)) as (url, service):
        _, user = await service.keys.create("app")
        _, other = await service.keys.create("other")
        _, root = await service.keys.create("root", admin=True)
        async with client(url) as anon, client(url, user) as c, client(url, other) as o, client(url, root) as r:
            assert (await anon.get("/v1/models")).status_code == 401
            assert (await client(url, "gb_wrong").get("/v1/models")).status_code == 401
            assert (await anon.get("/healthz")).status_code == 200
            mine = (await c.post("/v1/generate", json={"model": "alpha", "length": 5})).json()
            await o.post("/v1/generate", json={"model": "alpha", "length": 5})
            history = (await c.get("/v1/generations")).json()["generations"]
            assert [g["id"] for g in history] == [mine["id"]]
            assert (await c.get("/v1/admin/corpora")).status_code == 403
            assert (await r.get("/v1/admin/corpora")).status_code == 200
            await service.keys.revoke("app")
            assert (await c.get("/v1/models")).status_code == 401
        [listed] = [k for k in await service.keys.list() if k.name == "app"]
        assert listed.prefix == user[:10] and listed.revoked_at is not None and listed.last_used_at is not None


def test_public_address_without_keys_is_refused() -> None:
    with pytest.raises(ConfigError, match="require_keys"):
        check_bind(ApiSettings(host="0.0.0.0"))
    check_bind(ApiSettings(host="0.0.0.0", require_keys=True))
    check_bind(ApiSettings(host="::1"))


async def test_metrics_count_requests_and_chars(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        await c.post("/v1/generate", json={"model": "alpha", "length": 25, "stream": True})
        await c.get("/v1/nothing")
        text = (await c.get("/metrics")).text
    assert 'genbot_chars_generated_total{model="alpha"} 25.0' in text
    assert 'genbot_http_requests_total{method="POST",route="/v1/generate",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'genbot_time_to_first_char_seconds_count{model="alpha"} 1.0' in text
    assert "genbot_active_streams 0.0" in text and "genbot_engine_queue_depth" in text
    assert 'genbot_jobs{state="queued"} 0.0' in text
    assert 'genbot_engine_path{model="alpha",prime="' in text  # the serving paths chosen at load


async def test_admin_corpus_jobs_and_versions(plugins_dir: Path, corpus_text: str) -> None:
    async with api_server(ApiSettings(unkeyed_admin=True)) as (url, _), client(url) as c:
        up = await c.put("/v1/admin/corpora/plays?licence=public%20domain", content=corpus_text.encode())
        assert up.status_code == 201, up.text
        assert up.json()["chars"] == len(corpus_text)
        again = await c.put("/v1/admin/corpora/copy", content=corpus_text.encode())
        assert again.status_code == 400 and "plays" in again.json()["error"]["message"]
        assert [x["name"] for x in (await c.get("/v1/admin/corpora")).json()["corpora"]] == ["plays"]
        job = await c.post("/v1/admin/jobs", json={"model": "alpha", "corpus": "plays", "steps": 5})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        assert (await c.get(f"/v1/admin/jobs/{job_id}")).json()["status"] == "queued"
        assert (await c.post(f"/v1/admin/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
        log = (await c.get(f"/v1/admin/jobs/{job_id}")).json()["events"]
        assert [e["data"].get("message") for e in log][-1] == "cancelled before it ran"
        newer = await c.get(f"/v1/admin/jobs/{job_id}", params={"events_after": log[-1]["id"]})
        older = await c.get(f"/v1/admin/jobs/{job_id}", params={"events_after": log[-1]["id"] - 1})
        assert newer.json()["events"] == [] and newer.json()["status"] == "cancelled"  # a watcher gets only new lines
        assert older.json()["events"] == log[-1:]
        assert (await c.get("/v1/admin/jobs/999")).status_code == 404
        bad = await c.post("/v1/admin/jobs", json={"model": "alpha", "corpus": "nope", "steps": 5})
        assert bad.status_code in (400, 404) and "nope" in bad.json()["error"]["message"]
        versions = (await c.get("/v1/admin/models/alpha/versions")).json()["versions"]
        assert [v["version"] for v in versions] == [1] and versions[0]["active"]
        assert (await c.post("/v1/admin/models/alpha/activate", json={"version": 1})).status_code == 200
        assert (await c.post("/v1/admin/models/alpha/activate", json={"version": 9})).status_code == 404


async def test_healthz(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with httpx.AsyncClient(base_url=url) as c:
        body = (await c.get("/healthz")).json()
    assert body == {"status": "ok", "models": ["alpha", "beta"]}


async def test_daily_quota_caps_then_refuses_with_429(plugins_dir: Path) -> None:
    async with api_server(ApiSettings(daily_chars=30), clock=fixed_noon) as (url, service), client(url) as c:
        first = (await c.post("/v1/generate", json={"model": "alpha", "length": 20})).json()
        capped = (await c.post("/v1/generate", json={"model": "alpha", "length": 20})).json()
        refused = await c.post("/v1/generate", json={"model": "alpha", "length": 20})
        assert (len(first["text"]), len(capped["text"])) == (20, 10)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "30 characters" in refused.json()["error"]["message"]
        assert (await service.quotas.usage("key", "anonymous")).chars == 30


async def test_cancelled_stream_is_charged_what_it_produced(plugins_dir: Path) -> None:
    req = {"model": "alpha", "length": 5000, "stream": True}
    async with api_server(ApiSettings(daily_chars=100_000), clock=fixed_noon) as (url, service):
        slow_down_model(service, "alpha")  # still running when the client leaves
        async with client(url) as c, c.stream("POST", "/v1/generate", json=req) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: token"):
                    break
        [row] = await _wait_for_final(service)
        used = await _charged(service)
    assert used == row.chars > 0 and row.status == "cancelled"


async def _charged(service: GenbotService) -> int:
    """Characters charged to the anonymous caller today, once the charge has landed."""
    for _ in range(100):
        used = (await service.quotas.usage("key", "anonymous")).chars
        if used:
            return used
        await asyncio.sleep(0.05)
    return 0


async def test_stored_key_quota_overrides_the_default(plugins_dir: Path) -> None:
    async with api_server(clock=fixed_noon) as (url, service):
        row, key = await service.keys.create("limited")
        await service.quotas.set_quota("key", str(row.id), chars_per_day=15)
        async with client(url, key) as c:
            first = (await c.post("/v1/generate", json={"model": "alpha", "length": 50})).json()
            refused = await c.post("/v1/generate", json={"model": "alpha", "length": 5})
        async with client(url) as anonymous:  # other callers are not affected
            assert (await anonymous.post("/v1/generate", json={"model": "alpha", "length": 50})).status_code == 200
    assert len(first["text"]) == 15 and refused.status_code == 429


async def test_uploads_have_their_own_cap(plugins_dir: Path, corpus_text: str) -> None:
    settings = ApiSettings(max_body_bytes=100, max_upload_bytes=len(corpus_text.encode()) + 10, unkeyed_admin=True)
    async with api_server(settings) as (url, _), client(url) as c:
        fits = await c.put("/v1/admin/corpora/plays", content=corpus_text.encode())
        too_big = await c.put("/v1/admin/corpora/more", content=corpus_text.encode() * 2)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield corpus_text.encode()

        chunked = await c.put("/v1/admin/corpora/chunked", content=chunks())
        listed = (await c.get("/v1/admin/corpora")).json()["corpora"]
    assert fits.status_code == 201, fits.text
    for response in (too_big, chunked):
        assert response.status_code == 413 and "bytes" in response.json()["error"]["message"]
    assert [x["name"] for x in listed] == ["plays"]


async def test_rate_limit_holds_across_replicas_sharing_a_database(
    plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genbot.storage.migrate import upgrade_database

    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    await upgrade_database(db_url)
    limits = ApiSettings(rate_per_minute=3)
    async with (
        api_server(limits, clock=fixed_noon) as (url_a, _),
        api_server(limits, clock=fixed_noon) as (url_b, _),
        client(url_a) as a,
        client(url_b) as b,
    ):
        codes = [(await c.get("/v1/models")).status_code for c in (a, b, a, b)]
    assert codes == [200, 200, 200, 429]


# ----- hosts, unkeyed admin, metrics, invalid-key floods ----------------------------------------


async def test_foreign_host_headers_are_refused_on_every_route(plugins_dir: Path) -> None:
    async with api_server() as (url, _), client(url) as c:
        foreign = {"host": "attacker.example"}
        refused = [
            await c.get("/healthz", headers=foreign),
            await c.get("/metrics", headers=foreign),
            await c.get("/v1/admin/corpora", headers=foreign),
            await c.post("/v1/generate", json={"model": "alpha", "length": 5, "stream": True}, headers=foreign),
        ]
        port = url.rsplit(":", 1)[1]
        allowed = [await c.get("/healthz", headers={"host": h}) for h in ("localhost", f"127.0.0.2:{port}", "[::1]:1")]
        rows = await _history_of(url)
    for response in refused:
        assert response.status_code == 400, response.text
        assert "Host" in response.json()["error"]["message"]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert rows == []  # the refused stream never started a generation


async def _history_of(url: str) -> list:
    """The anonymous caller's stored generations, through the API."""
    async with client(url) as c:
        return (await c.get("/v1/generations")).json()["generations"]


async def test_configured_hosts_are_allowed(plugins_dir: Path) -> None:
    async with api_server(ApiSettings(allowed_hosts=["genbot.example"])) as (url, _), client(url) as c:
        named = await c.get("/healthz", headers={"host": "GENBOT.example:443"})
        other = await c.get("/healthz", headers={"host": "evil.example"})
    async with api_server(ApiSettings(allowed_hosts=["*"])) as (url, _), client(url) as c:
        anything = await c.get("/healthz", headers={"host": "evil.example"})
    assert (named.status_code, other.status_code, anything.status_code) == (200, 400, 200)


async def test_unkeyed_callers_may_generate_but_not_administer_by_default(plugins_dir: Path) -> None:
    async with api_server() as (url, service), client(url) as c:
        generated = await c.post("/v1/generate", json={"model": "alpha", "length": 5})
        refused = [
            await c.get("/v1/admin/corpora"),
            await c.put("/v1/admin/corpora/plays", content=b"some corpus text"),
            await c.post("/v1/admin/models/alpha/activate", json={"version": 1}),
        ]
        corpora = await service.corpora.list()
    assert generated.status_code == 200
    for response in refused:
        assert response.status_code == 403 and "unkeyed_admin" in response.json()["error"]["message"]
    assert corpora == []


async def test_metrics_count_every_job_in_sql(plugins_dir: Path) -> None:
    from genbot.storage.tables import Job

    async with api_server() as (url, service):
        async with service.db.write() as session:  # type: ignore[union-attr]
            queued = [Job(kind="retrain", model="alpha", args={}, max_attempts=1) for _ in range(1_200)]
            failed = [Job(kind="retrain", model="alpha", args={}, max_attempts=1, status="failed") for _ in range(3)]
            session.add_all(queued + failed)
        async with client(url) as c:
            text = (await c.get("/metrics")).text
    assert 'genbot_jobs{state="queued"} 1200.0' in text  # was capped at the 1,000 rows a scrape read
    assert 'genbot_jobs{state="failed"} 3.0' in text and 'genbot_jobs{state="running"} 0.0' in text


async def test_metrics_key_guards_metrics_only(plugins_dir: Path) -> None:
    async with (
        api_server(ApiSettings(metrics_key="scrape-me")) as (url, _),
        client(url) as anon,
        client(url, "wrong") as wrong,
        client(url, "scrape-me") as scraper,
    ):
        codes = [(await c.get("/metrics")).status_code for c in (anon, wrong, scraper)]
        health = (await anon.get("/healthz")).status_code
    assert codes == [401, 401, 200] and health == 200


async def test_invalid_key_floods_get_429_per_address(plugins_dir: Path) -> None:
    settings = ApiSettings(require_keys=True, bad_keys_per_minute=3, rate_per_minute=0)
    async with api_server(settings, clock=lambda: 6_000_030.0) as (url, service):  # 30 s into a window
        _, good = await service.keys.create("good")
        async with client(url) as c:
            codes = [(await c.get("/v1/models", headers={"Authorization": f"Bearer gb_guess{i}"})).status_code
                     for i in range(5)]  # fmt: skip
            limited = await c.get("/v1/models", headers={"Authorization": "Bearer gb_guess9"})
            valid = await c.get("/v1/models", headers={"Authorization": f"Bearer {good}"})
    assert codes == [401, 401, 401, 429, 429]
    assert limited.status_code == 429 and limited.headers["retry-after"] == "30"
    assert "invalid API keys" in limited.json()["error"]["message"]
    assert valid.status_code == 200  # a real key from the same address still works

"""Scale-out: two `genbot api` processes and two `genbot worker` processes on one database.

Clients spread generations and fine-tune jobs over both servers while both workers train; at the
end every generation is one completed row holding exactly the text its client received, every
job ran once on one worker, and the versions it made are numbered without gaps or repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from genbot.config import load_settings
from genbot.frontends.api.app import free_port
from genbot.service import GenbotService
from genbot.storage.tables import JobStatus
from genbot.testing.replicas import genbot_processes, wait_healthy

GENERATIONS = 48  # spread over both servers, half of them streamed
JOBS = 4
TRAINING = {"block": 32, "batch": 8, "eval_every": 5}


async def generate(c: httpx.AsyncClient, seed: int) -> dict[str, Any]:
    """One generation, streamed for odd seeds; returns its id, text and status as the client saw them."""
    body = {"model": "alpha", "prompt": "ROMEO:", "length": 40, "seed": seed, "stream": seed % 2 == 1}
    if not body["stream"]:
        r = await c.post("/v1/generate", json=body)
        assert r.status_code == 200, r.text
        return {k: r.json()[k] for k in ("id", "text", "status")}
    text, done = "", {}
    async with c.stream("POST", "/v1/generate", json=body) as r:
        assert r.status_code == 200
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token":
                text += httpx.Response(200, content=line[6:]).json()["text"]
            elif line.startswith("data: ") and event == "done":
                done = httpx.Response(200, content=line[6:]).json()
    return {"id": done["id"], "text": text, "status": done["status"]}


@pytest.mark.slow
async def test_two_servers_and_two_workers_on_one_database(jobs_env: str, tmp_path: Path) -> None:
    async with GenbotService(load_settings(), serving=False) as service:
        _, key = await service.keys.create("ops", admin=True)
    ports = [free_port(), free_port()]
    commands = {f"api{i}": ["api", "--port", str(port)] for i, port in enumerate(ports)}
    commands |= {f"worker{i}": ["worker"] for i in range(2)}
    with genbot_processes(tmp_path, commands) as procs:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for i, url in enumerate(urls):
            wait_healthy(url, procs[f"api{i}"], tmp_path / f"api{i}.log")
        headers = {"Authorization": f"Bearer {key}"}
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=u, headers=headers, timeout=120))
                for u in urls
            ]
            job_body = {"model": "alpha", "corpus": "plays", "steps": 5, "options": TRAINING}
            queued = [await clients[i % 2].post("/v1/admin/jobs", json=job_body) for i in range(JOBS)]
            assert [r.status_code for r in queued] == [201] * JOBS, [r.text for r in queued]
            got = await asyncio.gather(*(generate(clients[s % 2], s) for s in range(GENERATIONS)))
            jobs = await _wait_jobs(clients[0], [r.json()["id"] for r in queued])

        async with GenbotService(load_settings(), serving=False) as service:
            rows = await service.history(limit=1000)
            events = {job["id"]: await service.jobs.events(job["id"]) for job in jobs}

    stored = {row.id: row for row in rows}
    assert len(rows) == GENERATIONS  # one row per request, none lost, none doubled
    for seen in got:
        row = stored[seen["id"]]
        assert (row.status, row.output, seen["status"]) == ("completed", seen["text"], "completed")
        assert len(seen["text"]) == 40
    assert [job["status"] for job in jobs] == [JobStatus.SUCCEEDED.value] * JOBS, [j["error"] for j in jobs]
    assert all(job["attempts"] == 1 for job in jobs), [(j["attempts"], j["lease_owner"]) for j in jobs]
    claims = {jid: [e for e in ev if e.source == "worker" and e.data["message"].startswith("claimed by")]
              for jid, ev in events.items()}  # fmt: skip
    assert all(len(c) == 1 for c in claims.values()), claims
    assert sorted(job["result_version"] for job in jobs) == [2, 3, 4, 5]  # one version each, none twice
    assert len({job["lease_owner"] for job in jobs}) == 2, [j["lease_owner"] for j in jobs]  # both workers took part
    assert all(proc.returncode == 0 for proc in procs.values()), {n: p.returncode for n, p in procs.items()}


async def _wait_jobs(c: httpx.AsyncClient, ids: list[int], timeout: float = 300.0) -> list[dict[str, Any]]:
    """Poll the admin API until every job has finished; returns them in ``ids`` order."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = [await c.get(f"/v1/admin/jobs/{jid}") for jid in ids]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        jobs = [r.json() for r in answers]
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
            return jobs
        await asyncio.sleep(0.5)
    raise AssertionError(f"jobs did not finish in {timeout} s")

"""Many replicas at once: real ``genbot api`` and ``genbot worker`` processes on one database, under load.

Used by ``bench/replicas_load.py`` (full size) and the reduced test in ``tests/``, so both check
the same things:

* ``genbot_processes`` starts ``python -m genbot …`` children (logs to ``NAME.log``) and stops
  them with SIGTERM; ``wait_healthy`` waits for a server's ``/healthz``;
* ``run_load`` spreads streaming clients over the servers for a while, queues a retrain job as
  the load starts, and activates the job's version through the admin API half-way through;
* ``check_invariants`` compares what the clients saw with the stored rows and the job's record:
  no errors but the documented 429/503, every completed request stored once with the text its
  client got, one run of the job, and streams finishing on the version they started on;
* ``summarise`` turns a run into the figures the bench prints.

Deciding which version a stream ran on needs no clock agreement between processes: a stream
whose first character arrived before activation was requested started on the old version, one
sent after every server reported the new version started on the new one, and for one seed and
one version every client must have read the same text (the engine gives a seed the same text
alone or batched), so a stream that switched networks half-way would stand out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# A busy machine must not make a worker miss its lease (no worker is killed here, so every job
# needs exactly one attempt); no per-key rate limit, since one key carries every client.
CLUSTER_ENV = {
    "GENBOT_ENGINE__TORCH_THREADS": "1",
    "GENBOT_API__RATE_PER_MINUTE": "0",
    "GENBOT_JOBS__LEASE_SECONDS": "30",
    "GENBOT_JOBS__HEARTBEAT_SECONDS": "1",
}
# On top of CLUSTER_ENV for run_load: the load activates the job's version itself, mid-run, and
# servers look for it twice a second; per-request debug logs would cost more than the streams.
LOAD_ENV = {
    "GENBOT_VERSIONS__AUTO_ACTIVATE": "never",
    "GENBOT_VERSIONS__POLL_SECONDS": "0.5",
    "GENBOT_JOBS__TRAIN_THREADS": "1",
    "GENBOT_LOG_LEVEL": "INFO",
}
DOCUMENTED_REFUSALS = (429, 503)  # rate limited / busy: the client waits Retry-After and tries again
FINISHED_JOB = ("succeeded", "failed", "cancelled")
PAGE = 1000  # rows per history page (the most one page may hold)


@contextlib.contextmanager
def genbot_processes(
    workdir: Path, commands: dict[str, list[str]], env: dict[str, str] | None = None
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start ``python -m genbot ARGS`` for each name (output to ``workdir/NAME.log``); SIGTERM all on exit."""
    environment = os.environ | CLUSTER_ENV | (env or {})
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, args in commands.items():
            with (workdir / f"{name}.log").open("wb") as log:
                cmd = [sys.executable, "-m", "genbot", *args]
                started[name] = subprocess.Popen(cmd, env=environment, stdout=log, stderr=subprocess.STDOUT)
        yield started
    finally:
        for proc in started.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in started.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    """Poll ``url/healthz`` until the server answers (fail with the end of its log if it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"server at {url} did not start within {timeout} s")


@dataclass(frozen=True)
class LoadPlan:
    """What the clients do: how many, how long, and the one request shape they send."""

    clients: int
    seconds: float
    model: str
    job: dict[str, Any]  # POST /v1/admin/jobs body: the retrain that makes the new version
    length: int = 200
    seeds: int = 16  # a small pool, so every (seed, version) is read by many clients
    prompt: str = "ROMEO:\n"
    activate_at: float = 0.5  # fraction of ``seconds``


@dataclass
class StreamResult:
    """One request as its client saw it (times are this process's time.monotonic())."""

    server: int
    seed: int
    sent: float
    status: int = 0  # HTTP status; 0 when the connection failed
    first_char: float | None = None
    text: str = ""
    done: dict[str, Any] | None = None
    error: str | None = None
    retry_after: float = 0.0


@dataclass
class LoadRun:
    """A finished load: what every client saw, the job, and when the version changed."""

    plan: LoadPlan
    results: list[StreamResult]
    started: float
    ended: float
    job: dict[str, Any] = field(default_factory=dict)
    old_version: int = 0
    new_version: int = 0
    activation_sent: float = 0.0  # when the activate request left
    all_serving_new: float = 0.0  # when every server first reported the new version
    until: float = 0.0  # when clients stop sending: the plan's end, later if the switch came late


async def run_load(urls: Sequence[str], key: str, plan: LoadPlan) -> LoadRun:
    """Clients stream over every server while a retrain runs and its version is activated mid-run."""
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends: a request sent on one the
    # server is closing at that moment fails in transit, which no server can answer.
    size = plan.clients + 8
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=2.0)
    headers = {"Authorization": f"Bearer {key}"}
    async with contextlib.AsyncExitStack() as stack:
        http = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=u, headers=headers, timeout=httpx.Timeout(120, connect=30), limits=limits)
            )
            for u in urls
        ]
        old_version = await _served_version(http[0], plan.model)
        queued = await http[0].post("/v1/admin/jobs", json=plan.job)
        if queued.status_code != 201:
            raise AssertionError(f"the retrain job was refused: {queued.status_code} {queued.text}")
        started = time.monotonic()
        run = LoadRun(plan, [], started, started, old_version=old_version, until=started + plan.seconds)
        clients = [asyncio.create_task(_client(i, http, plan, run)) for i in range(plan.clients)]
        try:
            await _activate_mid_run(http, plan, started, queued.json()["id"], run)
        except BaseException:  # a failed activation must not leave clients running behind the exception
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            raise
        # A job slower than planned delays the switch: the load goes on long enough after it.
        run.until = max(run.until, run.all_serving_new + plan.seconds * (1 - plan.activate_at))
        await asyncio.gather(*clients)  # one that raises (not a failed request: those are recorded) is a bug
        run.ended = time.monotonic()
        run.job = await _finished_job(http[0], queued.json()["id"], timeout=120)
    return run


async def _client(index: int, http: Sequence[httpx.AsyncClient], plan: LoadPlan, run: LoadRun) -> None:
    """One client: request after request (to the servers in turn) until ``run.until``; refusals wait Retry-After."""
    n = 0
    while time.monotonic() < run.until or not run.all_serving_new:  # no end before the switch
        server, seed = (index + n) % len(http), (index + n) % plan.seeds
        result = await stream_once(http[server], server, seed, plan)
        run.results.append(result)
        if result.status in DOCUMENTED_REFUSALS:
            await asyncio.sleep(min(max(result.retry_after, 0.1), 2.0))
        n += 1


async def stream_once(c: httpx.AsyncClient, server: int, seed: int, plan: LoadPlan) -> StreamResult:
    """One streamed generation: the text of every token event, the done event, or what went wrong."""
    body = {"model": plan.model, "prompt": plan.prompt, "length": plan.length, "seed": seed, "stream": True}
    result = StreamResult(server, seed, time.monotonic())
    try:
        async with c.stream("POST", "/v1/generate", json=body) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = (await response.aread()).decode("utf-8", "replace")[:300]
                with contextlib.suppress(ValueError):
                    result.retry_after = float(response.headers.get("Retry-After", "0"))
                return result
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    _take_event(result, event, json.loads(line[len("data: ") :]))
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


def _take_event(result: StreamResult, event: str, data: Any) -> None:
    """Fold one SSE event into the result."""
    if event == "token":
        if result.first_char is None:
            result.first_char = time.monotonic()
        result.text += data["text"]
    elif event == "done":
        result.done = data
    elif event == "error":
        result.error = json.dumps(data)[:300]


async def _activate_mid_run(
    http: Sequence[httpx.AsyncClient], plan: LoadPlan, started: float, job_id: int, run: LoadRun
) -> None:
    """At ``activate_at``, activate the job's version (waiting for the job if need be) and see it served."""
    await asyncio.sleep(max(0.0, started + plan.seconds * plan.activate_at - time.monotonic()))
    job = await _finished_job(http[0], job_id, timeout=max(60.0, plan.seconds * 4))
    if job["status"] != "succeeded" or not job.get("result_version"):
        raise AssertionError(f"the retrain job did not make a version: {job}")
    run.new_version = int(job["result_version"])
    run.activation_sent = time.monotonic()
    answer = await http[-1].post(f"/v1/admin/models/{plan.model}/activate", json={"version": run.new_version})
    if answer.status_code != 200:
        raise AssertionError(f"activation was refused: {answer.status_code} {answer.text}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        served = [await _served_version(c, plan.model) for c in http]
        if all(v == run.new_version for v in served):
            run.all_serving_new = time.monotonic()
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the servers did not pick up version {run.new_version} within 60 s")


async def _served_version(c: httpx.AsyncClient, model: str) -> int:
    """The version of ``model`` a server serves now (from its card in GET /v1/generators)."""
    answer = await c.get("/v1/generators")
    answer.raise_for_status()
    for entry in answer.json()["generators"]:
        if entry["name"] == model and entry["card"]:
            return int(entry["card"]["version"])
    raise AssertionError(f"{model} is not served: {answer.text[:500]}")


async def _finished_job(c: httpx.AsyncClient, job_id: int, timeout: float) -> dict[str, Any]:
    """Poll the admin API until the job has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await c.get(f"/v1/admin/jobs/{job_id}")
        answer.raise_for_status()
        job: dict[str, Any] = answer.json()
        if job["status"] in FINISHED_JOB:
            return job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


@dataclass(frozen=True)
class StoredRow:
    """What the check needs of one stored generation."""

    id: int
    status: str
    output: str
    model_version: str | None
    frontend: str


async def stored(job_id: int) -> tuple[list[StoredRow], int]:
    """The stored generations (settings from the environment) and how many workers claimed the job."""
    from genbot.config import load_settings
    from genbot.service import GenbotService

    async with GenbotService(load_settings(), serving=False) as service:
        rows: list[Any] = []
        while page := await service.history(limit=PAGE, offset=len(rows)):  # nothing writes any more
            rows += page
        events = await service.jobs.events(job_id)
    kept = [StoredRow(r.id, str(r.status.value), r.output, r.model_version, r.frontend) for r in rows]
    claims = [e for e in events if e.source == "worker" and str(e.data.get("message", "")).startswith("claimed by")]
    return kept, len(claims)


def check_invariants(run: LoadRun, rows: Sequence[StoredRow], job_claims: int) -> list[str]:
    """Every broken promise of the run, in words (empty: all held)."""
    problems = _errors(run) + _storage_problems(run, rows) + _version_problems(run)
    if run.job.get("status") != "succeeded" or run.job.get("attempts") != 1 or job_claims != 1:
        problems.append(f"the job did not run exactly once: {run.job} ({job_claims} claims)")
    return problems


def _errors(run: LoadRun) -> list[str]:
    """Answers other than success and the documented refusals, broken streams, failed generations."""
    wrong = []
    for r in run.results:
        if r.status in DOCUMENTED_REFUSALS:
            continue
        if r.status != 200 or r.error or r.done is None or r.done.get("status") != "completed":
            wrong.append(f"server {r.server} seed {r.seed}: status {r.status}, error {r.error}, done {r.done}")
    return [f"{len(wrong)} failed requests, e.g. {wrong[:3]}"] if wrong else []


def completed(run: LoadRun) -> list[StreamResult]:
    """Requests that streamed to their done event with status completed."""
    return [r for r in run.results if r.status == 200 and r.done and r.done.get("status") == "completed"]


def _storage_problems(run: LoadRun, rows: Sequence[StoredRow]) -> list[str]:
    """Each completed request is one completed row with exactly the text and version its client got."""
    problems = []
    done = completed(run)
    ids = Counter(r.done["id"] for r in done if r.done)
    if doubled := [i for i, n in ids.items() if n > 1]:
        problems.append(f"generation ids given to more than one client: {doubled[:5]}")
    stored = {row.id: row for row in rows if row.frontend == "api"}
    if len(stored) != len(done):
        problems.append(f"{len(stored)} stored API rows for {len(done)} completed requests")
    for r in done:
        assert r.done is not None
        row = stored.get(r.done["id"])
        if row is None:
            problems.append(f"generation {r.done['id']} was not stored")
        elif (row.status, row.output, row.model_version) != ("completed", r.text, str(r.done["version"])):
            seen = (row.status, len(row.output), row.model_version)
            problems.append(
                f"row {row.id} {seen} differs from its client's {len(r.text)} chars of v{r.done['version']}"
            )
    return problems[:20]


def _version_problems(run: LoadRun) -> list[str]:
    """Streams finish on the version they started on; one seed and version, one text."""
    problems = []
    done = completed(run)
    before = [r for r in done if r.first_char is not None and r.first_char < run.activation_sent]
    after = [r for r in done if r.sent > run.all_serving_new]
    if not before or not after:
        problems.append(
            f"{len(before)} streams began before activation and {len(after)} after it: not a mid-run switch"
        )
    if wrong := [r.done for r in before if r.done and r.done["version"] != run.old_version]:
        problems.append(f"{len(wrong)} streams begun on v{run.old_version} report another version: {wrong[:2]}")
    if wrong := [r.done for r in after if r.done and r.done["version"] != run.new_version]:
        problems.append(f"{len(wrong)} streams sent after the switch ran on another version: {wrong[:2]}")
    texts: dict[tuple[int, int], set[str]] = {}
    for r in done:
        assert r.done is not None
        texts.setdefault((r.seed, r.done["version"]), set()).add(r.text)
    if mixed := [key for key, seen in texts.items() if len(seen) > 1]:
        problems.append(f"(seed, version) pairs with different texts (a stream changed networks?): {mixed[:5]}")
    both = [s for s in range(run.plan.seeds) if (s, run.old_version) in texts and (s, run.new_version) in texts]
    if both and all(texts[(s, run.old_version)] == texts[(s, run.new_version)] for s in both):
        problems.append("the old and new versions write the same texts: the check cannot tell them apart")
    return problems


def summarise(run: LoadRun) -> dict[str, Any]:
    """The figures of a run: requests, characters per second, time to first char, answers by status."""
    import torch

    done = completed(run)
    seconds = max(run.ended - run.started, 1e-9)
    ttfc = sorted((r.first_char - r.sent) * 1000 for r in done if r.first_char is not None)
    statuses = Counter(str(r.status) if not r.error or r.status != 200 else "200 with error" for r in run.results)
    return {
        "clients": run.plan.clients,
        "servers": len({r.server for r in run.results}),
        "seconds": round(seconds, 1),
        "requests": len(run.results),
        "completed": len(done),
        "chars": sum(len(r.text) for r in done),
        "chars_per_s": round(sum(len(r.text) for r in done) / seconds, 1),
        "ttfc_p50_ms": _percentile(ttfc, 0.50),
        "ttfc_p95_ms": _percentile(ttfc, 0.95),
        "by_status": dict(sorted(statuses.items())),
        "old_version": run.old_version,
        "new_version": run.new_version,
        "on_old": sum(1 for r in done if r.done and r.done["version"] == run.old_version),
        "on_new": sum(1 for r in done if r.done and r.done["version"] == run.new_version),
        "switch_s": round(run.all_serving_new - run.activation_sent, 2),
        "job": {k: run.job.get(k) for k in ("id", "status", "attempts", "result_version")},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile of sorted ``values`` (inclusive method), rounded to 0.1; None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1], 1)

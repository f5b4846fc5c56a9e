"""The HTTP API under load: 64 streaming clients against a real server vs the engine in-process.

What it measures, with a SQLite database in a temporary data folder and the shakespeare plugin
(or random weights of the same shape if its weights are missing), 1 torch thread:

* in-process: 64 concurrent clients calling ``GenbotService.generate`` directly for ``--seconds``,
  each reading every chunk of a ``--length``-char generation and starting the next one;
* over HTTP: ``genbot api`` in its own process on loopback, and 64 concurrent clients doing the
  same through ``POST /v1/generate`` with ``"stream": true`` (server-sent events), each on a
  keep-alive HTTP/1.1 connection read by a minimal parser (``--client httpx``: httpx), so the
  clients sharing the machine take little of the CPU the server needs;
* the two alternate, ``--repeats`` rounds each, so other work on a shared machine hits both;
* aggregate chars/s of both (the ratio is held to ≥ 0.8x), p50/p95 time from sending the request
  to the first token event, errors (non-200 answers, error events, broken streams: must be 0),
  and that every request the clients completed is stored exactly once, completed, with the text
  the client received.

Why: this is what an application sees: HTTP parsing, auth, SSE framing and the second process
are the overhead the API adds on top of the engine.

    python bench/api_throughput.py [--plugins-dir plugins] [--model shakespeare] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl
from service_throughput import choose_model, settings_for

NAME = "api_throughput"
PROMPT = "ROMEO:\n"
TARGET_RATIO = 0.8  # HTTP / in-process aggregate chars/s at 64 streams


class Tally:
    """What the clients saw: characters, first-char latencies, errors and the stored ids they were told."""

    def __init__(self) -> None:
        self.chars = 0
        self.ttfc_ms: list[float] = []
        self.errors: list[str] = []
        self.texts: dict[int, str] = {}  # generation id → text received
        self.requests = 0


async def in_process(service: Any, model: str, clients: int, seconds: float, length: int, tally: Tally) -> float:
    """``clients`` loops over ``GenbotService.generate`` for ``seconds``; aggregate chars/s."""
    from genbot.service import GenerationRequest

    async def client(seed: int, until: float) -> None:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            gen = await service.generate(GenerationRequest(model=model, prompt=PROMPT, length=length, seed=seed))
            first = True
            async for chunk in gen:
                if first:
                    tally.ttfc_ms.append((time.perf_counter() - t0) * 1000)
                    first = False
                tally.chars += len(chunk)
            await gen.result()
            tally.requests += 1

    before, t0 = tally.chars, time.perf_counter()
    await asyncio.gather(*(client(s, t0 + seconds) for s in range(clients)))
    return (tally.chars - before) / (time.perf_counter() - t0)


async def over_http(
    http: Any, model: str, clients: int, seconds: float, length: int, tally: Tally, lean: bool = True
) -> float:
    """``clients`` concurrent loops over the SSE endpoint for ``seconds``; aggregate chars/s."""
    before, t0 = tally.chars, time.perf_counter()
    if lean:
        host, port = http.base_url.host, http.base_url.port
        loops = [_lean_client(host, port, model, s, t0 + seconds, length, tally) for s in range(clients)]
    else:
        loops = [_http_client(http, model, s, t0 + seconds, length, tally) for s in range(clients)]
    await asyncio.gather(*loops)
    return (tally.chars - before) / (time.perf_counter() - t0)


async def _http_client(http: Any, model: str, seed: int, until: float, length: int, tally: Tally) -> None:
    """One client: stream generations until ``until``, recording what it receives."""
    body = {"model": model, "prompt": PROMPT, "length": length, "seed": seed, "stream": True}
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        try:
            async with http.stream("POST", "/v1/generate", json=body) as response:
                if response.status_code != 200:
                    tally.errors.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                    continue
                await _read_events(response, t0, tally)
        except Exception as e:  # a broken stream is an error to report, not a crash of the bench
            tally.errors.append(f"{type(e).__name__}: {e}")


class LeanClient:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads chunked SSE answers.

    The bench's clients share the 2 cores with the server; httpx spends several times the
    server's own CPU per event parsing them, so with it the figure measured mostly the clients.
    This reads the same bytes with a few string operations. ``--client httpx`` keeps the old one.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post_sse(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Send the request; (status, an async iterator of (event, data) pairs of the answer)."""
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.conn
        payload = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, self._events(reader, headers)

    async def _events(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
        if headers.get("transfer-encoding") != "chunked":  # an error answer: one JSON body
            yield "error", (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
            return
        pending = ""
        while size := int((await reader.readline()).strip(), 16):
            pending += (await reader.readexactly(size + 2))[:-2].decode()
            *complete, pending = pending.split("\n\n")
            for block in complete:
                event, data = "message", ""
                for line in block.split("\n"):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                yield event, json.loads(data)
        await reader.readline()  # the blank line after the last chunk


async def _lean_client(host: str, port: int, model: str, seed: int, until: float, length: int, tally: Tally) -> None:
    """``_http_client`` on a ``LeanClient``."""
    body = {"model": model, "prompt": PROMPT, "length": length, "seed": seed, "stream": True}
    client = LeanClient(host, port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            try:
                status, events = await client.post_sse("/v1/generate", body)
                if status != 200:
                    tally.errors.append(f"HTTP {status}: {[d async for _, d in events]!r:.200}")
                    continue
                await _tally_events(events, t0, tally)
            except Exception as e:  # a broken stream is an error to report, not a crash of the bench
                tally.errors.append(f"{type(e).__name__}: {e}")
                client.conn = None
    finally:
        if client.conn is not None:
            client.conn[1].close()


async def _tally_events(events: Any, t0: float, tally: Tally) -> None:
    """Token texts, then the done event's id (an error event is an error)."""
    text: list[str] = []
    async for event, data in events:
        if event == "token":
            if not text:
                tally.ttfc_ms.append((time.perf_counter() - t0) * 1000)
            text.append(data["text"])
            tally.chars += len(data["text"])
        elif event == "done":
            tally.texts[data["id"]] = "".join(text)
        else:
            tally.errors.append(f"{event} event: {data}")


async def _read_events(response: Any, t0: float, tally: Tally) -> None:
    """Parse an httpx SSE stream into (event, data) pairs for ``_tally_events``."""

    async def pairs() -> Any:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])

    await _tally_events(pairs(), t0, tally)


def start_server(data_dir: Path, plugins_dir: Path, model: str, port: int) -> subprocess.Popen[str]:
    """``genbot api`` in a child process over the same data folder, one torch thread, no rate limit."""
    env = os.environ | {
        "GENBOT_DATA_DIR": str(data_dir),
        "GENBOT_PLUGINS_DIR": str(plugins_dir),
        "GENBOT_PLUGINS": model,
        "GENBOT_ENGINE__TORCH_THREADS": "1",
        "GENBOT_ENGINE__MAX_STREAMS_PER_MODEL": "128",
        "GENBOT_API__RATE_PER_MINUTE": "0",
        "GENBOT_LOG_LEVEL": "WARNING",
    }
    env.pop("GENBOT_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "genbot", "api", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, cwd=bl.REPO, stderr=subprocess.PIPE, text=True)


async def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Poll /healthz until the server answers."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"genbot api exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("genbot api did not start")


async def stored_check(settings: Any, tally: Tally) -> dict[str, Any]:
    """Every id the clients were given is one stored, completed API row with the text they received."""
    from genbot.service import GenbotService

    rows: list[Any] = []
    async with GenbotService(settings, serving=False) as service:
        while page := await service.history(limit=1000, offset=len(rows)):
            rows += page
    api_rows = [r for r in rows if r.frontend == "api"]
    by_id = {r.id: r for r in api_rows}
    missing = [i for i in tally.texts if i not in by_id]
    wrong = [
        i
        for i, text in tally.texts.items()
        if i in by_id and (by_id[i].output != text or by_id[i].status != "completed")
    ]
    return {
        "requests_completed": len(tally.texts),
        "rows_stored": len(api_rows),
        "ids_distinct": len(by_id) == len(api_rows),
        "missing": missing[:10],
        "mismatched": wrong[:10],
        "exactly_once": not missing and not wrong and len(by_id) == len(api_rows),
    }


async def measure(a: argparse.Namespace, settings: Any, plugins_dir: Path, model: str) -> dict[str, Any]:
    """Alternate in-process and HTTP rounds (the load of a shared machine hits both alike)."""
    import httpx

    from genbot.frontends.api.app import free_port
    from genbot.service import GenbotService

    port = free_port()
    proc = start_server(settings.data_dir, plugins_dir, model, port)
    local, remote, rates = Tally(), Tally(), {"in_process": [], "http": []}
    lean = a.client == "lean"
    limits = httpx.Limits(max_connections=a.clients, max_keepalive_connections=a.clients)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, proc)
        async with (
            GenbotService(settings) as service,
            httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http,
        ):
            await in_process(service, model, a.clients, 1.0, a.length, Tally())  # warm-up: threads, DB, kernels
            await over_http(http, model, a.clients, 1.0, a.length, Tally(), lean)
            before = await server_ttfc(http)
            for i in range(a.repeats):
                bl.say(f"[{i + 1}/{a.repeats}] {a.clients} clients for {a.seconds:g} s in-process, then over HTTP …")
                rates["in_process"].append(await in_process(service, model, a.clients, a.seconds, a.length, local))
                rates["http"].append(await over_http(http, model, a.clients, a.seconds, a.length, remote, lean))
            after = await server_ttfc(http)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    stored = await stored_check(settings, remote)
    server_mean = (after[0] - before[0]) / (after[1] - before[1]) * 1000 if after[1] > before[1] else None
    return {"rates": rates, "local": local, "remote": remote, "stored": stored, "server_ttfc_ms": server_mean}


async def server_ttfc(http: Any) -> tuple[float, float]:
    """The server's own time-to-first-char histogram: (sum of seconds, count), from /metrics."""
    values = {"sum": 0.0, "count": 0.0}
    for line in (await http.get("/metrics")).text.splitlines():
        for kind in values:
            if line.startswith(f"genbot_time_to_first_char_seconds_{kind}"):
                values[kind] += float(line.rsplit(" ", 1)[1])
    return values["sum"], values["count"]


def rows_for(r: dict[str, Any], clients: int) -> list[bl.Row]:
    """HTTP vs in-process rate, first-char latency of both, errors and storage verdicts."""
    remote, local, stored = r["remote"], r["local"], r["stored"]
    bad_rows = len(stored["missing"]) + len(stored["mismatched"]) + (0 if stored["ids_distinct"] else 1)
    p50 = (bl.percentile(remote.ttfc_ms, 50), bl.percentile(local.ttfc_ms, 50))
    p95 = (bl.percentile(remote.ttfc_ms, 95), bl.percentile(local.ttfc_ms, 95))
    rate_what = f"aggregate chars/s, {clients} SSE clients over HTTP vs in-process"
    return [
        bl.Row(
            rate_what,
            bl.median(r["rates"]["http"]),
            bl.median(r["rates"]["in_process"]),
            "chars/s",
            "ratio>=",
            TARGET_RATIO,
        ),
        bl.Row("time to first token, p50 (HTTP vs in-process)", *p50, "ms"),
        bl.Row("time to first token, p95 (HTTP vs in-process)", *p95, "ms"),
        bl.Row("time to first char inside the server (handler → first char), mean", r["server_ttfc_ms"], None, "ms"),
        bl.Row("errors over HTTP (non-200, error events, broken streams)", len(remote.errors), None, "", "value<=", 0),
        bl.Row("completed requests not stored exactly once with their text", bad_rows, None, "", "value<=", 0),
    ]


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick``: 5 s runs of 100-char streams)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plugins-dir", type=Path, default=bl.DEFAULT_PLUGINS, help="bundled plugins folder")
    p.add_argument("--model", default="shakespeare", help="plugin to serve")
    p.add_argument("--clients", type=int, default=64, help="concurrent streaming clients")
    p.add_argument("--seconds", type=float, default=30.0, help="how long each run keeps starting requests")
    p.add_argument("--length", type=int, default=400, help="characters per request")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds (median rate reported)")
    p.add_argument("--client", choices=("lean", "httpx"), default="lean",
                   help="HTTP client of the bench's streams: a minimal one (default) or httpx")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke test: one 5 s round each")
    a = p.parse_args()
    if a.quick:
        a.seconds, a.repeats = 5.0, 1
    return a


def main() -> None:
    """Run both, check storage, report."""
    a = parse_args()
    notes = [n for n in (bl.load_warning(1),) if n]
    with bl.scratch_dir("api") as tmp:
        bench_model, plugins_dir = choose_model(a.plugins_dir, a.model, Path(tmp))
        notes.append(f"{bench_model.name}: {bench_model.note}")
        settings = settings_for(Path(tmp) / "data", plugins_dir, [bench_model.name])
        r = asyncio.run(measure(a, settings, plugins_dir, bench_model.name))
    if a.quick:
        notes.append("--quick: one 5 s round each; smoke test only, figures not representative")
    notes.append(f"HTTP clients: {a.client}")
    notes += [f"error: {e}" for e in r["remote"].errors[:5]]
    rows = rows_for(r, a.clients)
    payload = {
        "clients": a.clients, "seconds": a.seconds, "length": a.length, "repeats": a.repeats, "rates": r["rates"],
        "stored": r["stored"], "requests": {"http": len(r["remote"].texts), "in_process": r["local"].requests},
        "env": bl.environment(1),
    }  # fmt: skip
    bl.report(NAME, rows, payload, notes)


if __name__ == "__main__":
    main()

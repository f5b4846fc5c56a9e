"""End-to-end serving: aggregate chars/s through ``GenbotService`` vs the raw yardstick.

What it measures, with a SQLite database in a temporary data folder and the shakespeare plugin
(or, if its weights are missing, random weights of the same shape):

* aggregate chars/s at 1, 8, 64 and 128 concurrent clients, each asking for a 400-char
  generation and reading every chunk; wall time from the first ``generate()`` call to the last
  ``result()`` (which includes the database row being written), characters summed. Compared with
  ``raw_charrnn.py sample`` at 1 stream and at 64 (same architecture, 1 thread);
* time to first char as a client sees it (``generate()`` call → first chunk) when 64 clients
  arrive at once: p50 and p95;
* peak RSS (``getrusage`` max RSS) of a fresh process that loads every bundled plugin through
  the registry and the service and generates once from each.

Why: this is the path every front end takes (validation, registry, database rows, engine,
asyncio hand-off), so its ratio to a bare decode loop is the overhead a user actually pays.

    python bench/service_throughput.py [--plugins-dir plugins] [--model shakespeare] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl

NAME = "service_throughput"
SHAKESPEARE = {"cell": "lstm", "layers": 2, "hidden": 384, "embedding": 64, "vocab_size": 65}
EXPECTED_PLUGINS = ("shakespeare", "latex", "linux")
PROMPT = "ROMEO:\n"
TARGETS = {1: 0.8, 64: 0.85}  # genbot / raw at that many streams
RSS_TARGET_MB = 400.0


PATHS = {"prime_path": "auto", "step_path": "auto"}  # [engine] paths the service runs with (--prime-path …)


def settings_for(data_dir: Path, plugins_dir: Path, enabled: list[str] | None) -> Any:
    """Settings for an isolated service: its own SQLite file, these plugins, 1 torch thread."""
    from sqlalchemy.engine import URL

    from genbot.config import EngineSettings, Settings

    url = URL.create("sqlite+aiosqlite", database=str(data_dir / "genbot.db")).render_as_string(hide_password=False)
    engine = EngineSettings(max_streams_per_model=128, max_queue=256, torch_threads=1, **PATHS)  # type: ignore[arg-type]
    return Settings(
        data_dir=data_dir, plugins_dir=plugins_dir, plugins_enabled=enabled, database_url=url, engine=engine
    )


async def client(service: Any, model: str, length: int, seed: int) -> tuple[int, float | None]:
    """One client: generate, read every chunk, wait for the stored result; (chars, ms to first chunk)."""
    from genbot.service import GenerationRequest

    t_call = time.perf_counter()
    gen = await service.generate(GenerationRequest(model=model, prompt=PROMPT, length=length, seed=seed))
    first_ms, n = None, 0
    async for chunk in gen:
        if first_ms is None and chunk:
            first_ms = (time.perf_counter() - t_call) * 1000
        n += len(chunk)
    await gen.result()
    return n, first_ms


async def service_round(service: Any, model: str, streams: int, length: int) -> tuple[float, list[float]]:
    """``streams`` clients at once; (aggregate chars/s, each client's ms to first chunk)."""
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client(service, model, length, seed) for seed in range(streams)))
    elapsed = time.perf_counter() - t0
    return sum(n for n, _ in results) / elapsed, [ms for _, ms in results if ms is not None]


def raw_rates(model: bl.BenchModel, steps: int) -> dict[int, float]:
    """The yardstick at 1 and 64 streams, same architecture, 1 thread."""
    out = bl.run_raw(["sample", *model.raw_args(), "--streams", "1,64", "--steps", str(steps), "--threads", "1"])
    return {b: float(out[f"streams_{b}_chars_per_s"]) for b in (1, 64)} if out else {}


async def measure(settings: Any, model: bl.BenchModel, counts: list[int], length: int, repeats: int) -> dict[str, Any]:
    """Interleave raw runs (while the service idles) with service rounds at each stream count."""
    from genbot.service import GenbotService

    runs: dict[str, Any] = {"genbot": {b: [] for b in counts}, "raw": {1: [], 64: []}, "ttfc_64_ms": []}
    async with GenbotService(settings) as service:
        await service_round(service, model.name, max(counts), 10)  # warm-up: threads, DB, kernels
        for i in range(repeats):
            bl.say(f"[{i + 1}/{repeats}] raw, then the service at {counts} concurrent streams …")
            for b, rate in (await asyncio.to_thread(raw_rates, model, length)).items():
                runs["raw"][b].append(rate)
            for b in counts:
                rate, firsts = await service_round(service, model.name, b, length)
                runs["genbot"][b].append(rate)
                runs["ttfc_64_ms"] += firsts if b == 64 else []
    runs["genbot_fast"] = {1: await lone_stream_rates(settings, model.name, length, repeats)}
    return runs


async def lone_stream_rates(settings: Any, model: str, length: int, repeats: int) -> list[float]:
    """One client at a time with ``batch_invariant = false`` (a lone stream is not padded)."""
    from genbot.service import GenbotService

    engine = settings.engine.model_copy(update={"batch_invariant": False})
    async with GenbotService(settings.model_copy(update={"engine": engine})) as service:
        await service_round(service, model, 1, 10)  # warm-up
        return [(await service_round(service, model, 1, length))[0] for _ in range(repeats)]


def rss_child(plugins_dir: Path, data_dir: Path) -> dict[str, Any]:
    """In this (fresh) process: load every plugin through the service, generate once each; peak RSS."""
    from genbot.errors import InvalidRequest
    from genbot.service import GenbotService

    async def run() -> dict[str, Any]:
        async with GenbotService(settings_for(data_dir, plugins_dir, None)) as service:
            entries = service.models()
            loaded = [e.name for e in entries if e.status == "loaded"]
            for name in loaded:
                with contextlib.suppress(InvalidRequest):  # an image model (the captioner) takes no prompt
                    await client(service, name, 50, 0)
        return {"loaded": loaded, "failed": [e.name for e in entries if e.status != "loaded"]}

    return asyncio.run(run()) | bl.peak_rss_mb()


def peak_rss(plugins_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Peak RSS of a fresh process serving every plugin: on a first start (which creates and
    migrates the database, loading Alembic) and on a restart over the same data folder."""
    with bl.scratch_dir("rss") as tmp:
        cmd = [sys.executable, __file__, "--rss-child", str(plugins_dir), "--rss-data", tmp]
        first = bl.run_json_child(cmd, timeout=600)
        restart = bl.run_json_child(cmd, timeout=600)
    return first, restart


def torch_only_rss() -> float | None:
    """Peak RSS (MB) of a fresh process that only imports torch: the floor under any serving process."""
    cmd = [sys.executable, "-c", "import json, torch, benchlib; print(json.dumps(benchlib.peak_rss_mb()))"]
    out = bl.run_json_child(cmd, timeout=300, cwd=Path(__file__).parent)
    return float(out["rss_mb"]) if out else None


def choose_model(plugins_dir: Path, name: str, workdir: Path) -> tuple[bl.BenchModel, Path]:
    """The plugin to serve and the plugins folder holding it (a stand-in folder if it is missing)."""
    model = bl.bench_model(plugins_dir / name, name, SHAKESPEARE, workdir / "plugins")
    return model, (workdir / "plugins" if model.fallback else plugins_dir)


def rss_plugins_dir(plugins_dir: Path, fallback_dir: Path) -> tuple[Path, str]:
    """The real plugins folder if any bundled plugin loads, else the stand-in folder; and a note."""
    from genbot.errors import GenbotError
    from genbot.networks.checkpoint import load_model

    present = []
    for folder in bl.bundled_folders(plugins_dir):
        try:
            load_model(folder)
            present.append(folder.name)
        except GenbotError:
            continue
    missing = [p for p in EXPECTED_PLUGINS if p not in present]
    if not present:
        if not bl.bundled_folders(fallback_dir):
            bl.save_random_model(fallback_dir / "shakespeare", "shakespeare", SHAKESPEARE)
        return fallback_dir, "peak RSS: no bundled plugin loads; measured with a random-weight shakespeare stand-in"
    note = f"peak RSS: bundled plugins loaded {present}" + (f"; missing {missing} (RSS understated)" if missing else "")
    return plugins_dir, note


def served_paths_note(model: bl.BenchModel, settings: Any) -> str:
    """The CPU and the serving paths the service chose for the model (read back from data_dir's cache)."""
    from genbot.engine.registry import prepare, tuner_for
    from genbot.networks.checkpoint import load_model

    env = bl.environment(1)
    loaded = prepare(load_model(model.folder), tuner_for(settings))
    cpu = f"CPU capability {env['cpu_capability']}, flags {' '.join(env['cpu_flags'])}"
    return f"{cpu}; native kernels: {env['native_kernels']}; {bl.paths_note(model.name, loaded.network)}"


def throughput_rows(runs: dict[str, Any], model: bl.BenchModel) -> list[bl.Row]:
    """Aggregate chars/s per stream count, with ratios where the yardstick has a figure."""
    rows = []
    for b, figures in runs["genbot"].items():
        goal: bl.Goal | None = "ratio>=" if b in TARGETS else None
        raw = bl.median(runs["raw"].get(b, []))
        what = f"service {model.name} ({model.label()}), {b} concurrent stream{'s' if b > 1 else ''}, 1 thread"
        rows.append(bl.Row(what, bl.median(figures), raw, "chars/s", goal, TARGETS.get(b)))
    for b, figures in runs.get("genbot_fast", {}).items():
        what = f"service {model.name} ({model.label()}), {b} stream, 1 thread, batch_invariant=false"
        rows.append(bl.Row(what, bl.median(figures), bl.median(runs["raw"][b]), "chars/s", "ratio>=", TARGETS[b]))
    return rows


def latency_rows(
    ttfc: list[float], rss: tuple[dict[str, Any] | None, dict[str, Any] | None], floor_mb: float | None
) -> list[bl.Row]:
    """First-char latency under 64 arriving clients, and the peak RSS held to its target."""
    first_mb, restart_mb = ((r or {}).get("rss_mb") for r in rss)
    what = "peak RSS, bundled plugins served, 1 generation each"
    return [
        bl.Row("time to first chunk, 64 clients arriving at once, p50", bl.percentile(ttfc, 50), None, "ms"),
        bl.Row("time to first chunk, 64 clients arriving at once, p95", bl.percentile(ttfc, 95), None, "ms"),
        bl.Row(f"{what}, restart (database exists)", restart_mb, None, "MB", "value<=", RSS_TARGET_MB),
        bl.Row(f"{what}, first start (creates + migrates the database)", first_mb, None, "MB"),
        bl.Row("peak RSS, a process that only imports torch (context)", floor_mb, None, "MB"),
    ]


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick``: 40-char streams, one repeat)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plugins-dir", type=Path, default=bl.DEFAULT_PLUGINS, help="bundled plugins folder")
    p.add_argument("--model", default="shakespeare", help="plugin to serve")
    p.add_argument("--length", type=int, default=400, help="characters per stream")
    p.add_argument("--streams", default="1,8,64,128", help="concurrent stream counts")
    p.add_argument("--repeats", type=int, default=2, help="rounds per count (median reported)")
    p.add_argument("--quick", action="store_true", help="smoke test: 40-char streams, 1 repeat")
    p.add_argument("--prime-path", default="auto", help="[engine] prime_path: auto, fp32, bf16, fp16")
    p.add_argument("--step-path", default="auto", help="[engine] step_path: auto, fp32, fp16")
    p.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rss-data", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        a.length, a.repeats = 40, 1
    return a


def main() -> None:
    """Throughput and latency through the service, then peak RSS in a fresh process; report."""
    a = parse_args()
    if a.rss_child:
        print(json.dumps(rss_child(a.rss_child, a.rss_data)))
        return
    counts = [int(s) for s in a.streams.split(",")]
    PATHS.update(prime_path=a.prime_path, step_path=a.step_path)
    notes = [n for n in (bl.load_warning(1),) if n]
    if bl.raw_anchor() is None:
        notes.append(bl.raw_missing_note())
    with bl.scratch_dir("service") as tmp:
        model, plugins_dir = choose_model(a.plugins_dir, a.model, Path(tmp))
        notes.append(f"{model.name}: {model.note}")
        settings = settings_for(Path(tmp) / "data", plugins_dir, [model.name])
        runs = asyncio.run(measure(settings, model, counts, a.length, a.repeats))
        notes.append(served_paths_note(model, settings))
        rss_dir, rss_note = rss_plugins_dir(a.plugins_dir, Path(tmp) / "plugins")
        bl.say("peak RSS in a fresh process …")
        rss = peak_rss(rss_dir)
        floor_mb = torch_only_rss()
    notes.append(rss_note)
    if rss[1]:
        notes.append(
            f"peak RSS is VmHWM ({rss[1].get('vmhwm_mb')} MB); getrusage max RSS says {rss[1]['getrusage_mb']} MB, "
            "but on Linux it keeps the parent's peak across exec, so it is not the child's own; "
            "a first start also loads Alembic to create the database (about 11 MB more)"
        )
    if a.quick:
        notes.append("--quick: 40-char streams, one round; smoke test only, figures not representative")
    rows = throughput_rows(runs, model) + latency_rows(runs["ttfc_64_ms"], rss, floor_mb)
    runs["ttfc_64_ms"] = [round(t, 2) for t in runs["ttfc_64_ms"]]
    payload = {"length": a.length, "repeats": a.repeats, "runs": runs, "rss": rss, "env": bl.environment(1)}
    bl.report(NAME, rows, payload, notes)


if __name__ == "__main__":
    main()

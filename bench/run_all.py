"""Run every genbot benchmark in sequence and collect their verdicts in one markdown table.

Runs ``train_throughput``, ``train_scaling``, ``sample_throughput``, ``quality``, ``service_throughput``
and ``api_throughput`` one after the other (never concurrently: they would steal each other's cores), each as its own
process, then prints a table of what / genbot / raw / ratio / target / PASS-MISS ready to paste
into the README and writes it to ``bench/results/summary.md``. Each bench also leaves its full
JSON in ``bench/results/NAME.json``.

At the defaults the whole run takes about 8-10 minutes on an idle 2-core machine (most of it the
two 120-second quality runs); ``--quick`` smoke-tests every bench in about a minute.

    python bench/run_all.py [--quick] [--corpus PATH] [--threads 2] [--seconds 120] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib as bl

BENCHES = (
    "train_throughput", "train_scaling", "sample_throughput", "quality", "service_throughput", "api_throughput",
    "history_search",
)  # fmt: skip
HERE = Path(__file__).resolve().parent


def bench_args(name: str, a: argparse.Namespace, corpus: Path) -> list[str]:
    """The options each bench gets from run_all's own."""
    args = ["--quick"] if a.quick else []
    if name in ("train_throughput", "train_scaling", "quality"):
        args = [str(corpus), *args]
    if name in ("train_throughput", "quality"):
        args += ["--threads", str(a.threads)] if a.threads else []
    if name == "quality" and not a.quick:
        args += ["--seconds", str(a.seconds)]
    return args


def run_bench(name: str, args: list[str]) -> dict[str, Any] | None:
    """Run one bench (progress on stderr passes through); its JSON result, or None if it failed."""
    bl.say(f"\n=== {name} {' '.join(args)}")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    has_json = bool(lines) and lines[-1].startswith("{")
    print("\n".join(lines[:-1] if has_json else lines), flush=True)  # the bench's table and notes
    bl.say(f"=== {name}: {time.perf_counter() - t0:.0f} s, exit {proc.returncode}")
    if proc.returncode != 0 or not has_json:
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def summary(results: dict[str, dict[str, Any] | None], a: argparse.Namespace, seconds: float) -> str:
    """The markdown page: a header line, the table, and every bench's notes."""
    rows = [bl.row_from_dict(r) for res in results.values() if res for r in res["rows"]]
    env = bl.environment(a.threads)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"Benchmarks {'(--quick: smoke test, not representative) ' if a.quick else ''}— {stamp}, commit "
        f"{env['commit']}, torch {env['torch']}, {env['cpus']} CPUs, load {env['loadavg_1m']}, "
        f"{seconds:.0f} s in all. Serving figures at 1 torch thread; training figures at "
        f"{a.threads or (1 if a.quick else 2)}."
    )
    notes = [f"- {name}: FAILED (see its output)" for name, res in results.items() if res is None]
    notes += [f"- {name}: {n}" for name, res in results.items() if res for n in res.get("notes", [])]
    return "\n\n".join([head, bl.markdown(rows), "\n".join(notes)]).rstrip() + "\n"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke-test every bench (about a minute)")
    p.add_argument("--corpus", help=f"training text (default ${bl.CORPUS_ENV} or tiny-shakespeare)")
    p.add_argument("--threads", type=int, help="torch threads for the training benches (default 2; quick 1)")
    p.add_argument("--seconds", type=float, default=120.0, help="training budget per side for quality")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    return p.parse_args()


def main() -> None:
    """Run the benches, print and write the summary table, end with one JSON line."""
    a = parse_args()
    corpus = bl.corpus_path(a.corpus)
    chosen = [n for n in a.only.split(",") if n]
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        raise SystemExit(f"unknown bench(es) {unknown}; choose from {', '.join(BENCHES)}")
    t0 = time.perf_counter()
    results = {name: run_bench(name, bench_args(name, a, corpus)) for name in chosen}
    page = summary(results, a, time.perf_counter() - t0)
    bl.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (bl.RESULTS_DIR / "summary.md").write_text(page, encoding="utf-8")
    print("\n" + page)
    verdicts = [r["verdict"] for res in results.values() if res for r in res["rows"]]
    counts = {v: verdicts.count(v) for v in ("PASS", "MISS", "n/a", "info")}
    failed = [name for name, res in results.items() if res is None]
    print(json.dumps({"bench": "run_all", "quick": a.quick, "verdicts": counts, "failed": failed}))


if __name__ == "__main__":
    main()

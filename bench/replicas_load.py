"""Replicas under load: two `genbot api` and two `genbot worker` processes on one PostgreSQL.

What it does, in a fresh database on the given PostgreSQL server and a temporary data folder:

* a stand-in generator (random weights, LSTM 2x128, tiny-shakespeare's characters) served by
  two ``genbot api`` processes on loopback, and two ``genbot worker`` processes;
* ``--clients`` (256) streaming clients spread over both servers for ``--seconds`` (60), each
  sending request after request (``"stream": true``, 200 characters, seeds from a pool of 16);
* a retrain job queued as the load starts, and its version activated half-way through;
* then the checks of ``genbot.testing.replicas.check_invariants`` (the same as the reduced test
  in ``tests/test_replicas_load.py``): no errors but the documented 429/503, every completed
  request stored once with the text its client got, the job run once, streams finishing on the
  version they started on.

It prints requests, aggregate chars/s, p50/p95 time from sending a request to its first
character, answers by status and the CPU capability. There is no yardstick ratio here: the
figure is the whole system's, on whatever machine runs it.

    python bench/replicas_load.py [--database-url postgresql+asyncpg://USER@HOST:5432/DB] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import benchlib as bl

from genbot.testing.databases import fresh_postgres_database

NAME = "replicas_load"
DATABASE_ENV = "GENBOT_BENCH_DATABASE_URL"  # else GENBOT_TEST_DATABASE_URL, as the tests use
SHAPE = {"cell": "lstm", "layers": 2, "hidden": 128, "embedding": 32, "vocab_size": 65}
JOB = {"model": "standin", "corpus": "plays", "steps": 20, "options": {"block": 64, "batch": 16, "eval_every": 10}}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", help=f"PostgreSQL server (default ${DATABASE_ENV} or $GENBOT_TEST_DATABASE_URL)")
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="32 clients for 15 s (a smoke test)")
    return p.parse_args()


async def prepare(workdir: Path, database_url: str) -> str:
    """Environment for this process and its children, the database migrated, corpus and admin key; the key."""
    from genbot.config import load_settings
    from genbot.service import GenbotService
    from genbot.storage.migrate import upgrade_database

    plugins, corpus = workdir / "plugins", workdir / "plays.txt"
    bl.save_random_model(plugins / JOB["model"], str(JOB["model"]), SHAPE)
    corpus.write_text(bl.PROMPT_200 * 400, encoding="utf-8")
    (workdir / "bot.toml").write_text("", encoding="utf-8")  # not the checkout's bot.toml
    os.environ.update(
        GENBOT_CONFIG=str(workdir / "bot.toml"),
        GENBOT_DATA_DIR=str(workdir / "data"),
        GENBOT_PLUGINS_DIR=str(plugins),
        GENBOT_DATABASE_URL=database_url,
    )
    await upgrade_database(database_url)
    async with GenbotService(load_settings(), serving=False) as service:
        await service.corpora.add("plays", [corpus])
        _, key = await service.keys.create("bench", admin=True)
    return key


async def measure(a: argparse.Namespace, workdir: Path, key: str) -> tuple[dict[str, Any], list[str]]:
    """Start the four processes, run the load, check it; the figures and the broken promises."""
    from genbot.frontends.api.app import free_port
    from genbot.testing.replicas import (
        LOAD_ENV,
        LoadPlan,
        check_invariants,
        genbot_processes,
        run_load,
        stored,
        summarise,
        wait_healthy,
    )

    ports = [free_port(), free_port()]
    commands = {f"api{i}": ["api", "--port", str(port)] for i, port in enumerate(ports)}
    commands |= {f"worker{i}": ["worker"] for i in range(2)}
    plan = LoadPlan(clients=a.clients, seconds=a.seconds, model=str(JOB["model"]), job=JOB, length=a.length)
    with genbot_processes(workdir, commands, LOAD_ENV) as procs:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for i, url in enumerate(urls):
            wait_healthy(url, procs[f"api{i}"], workdir / f"api{i}.log", timeout=180)
        bl.say(f"load: {plan.clients} clients over {urls} for {plan.seconds:.0f} s")
        run = await run_load(urls, key, plan)
    rows, claims = await stored(run.job["id"])
    problems = check_invariants(run, rows, claims)
    exits = {name: proc.returncode for name, proc in procs.items()}
    if any(code != 0 for code in exits.values()):
        problems.append(f"processes did not stop cleanly: {exits}")
    if problems:
        show_logged_errors(workdir, list(commands))
    return summarise(run), problems


def show_logged_errors(workdir: Path, names: list[str]) -> None:
    """Each process's first logged error with the end of its traceback (the folder is deleted after the run)."""
    for name in names:
        text = (workdir / f"{name}.log").read_text(errors="replace").splitlines()
        first = next((i for i, line in enumerate(text) if " ERROR " in line), None)
        if first is None:
            continue
        end = next((i for i in range(first + 2, len(text)) if not text[i].startswith((" ", "Traceback"))), len(text))
        shown = [text[first], *text[max(first + 1, end - 8) : end + 1]]
        bl.say(f"--- {name}.log, first error ({sum(' ERROR ' in line for line in text)} in all):\n" + "\n".join(shown))


def rows_for(figures: dict[str, Any], problems: list[str]) -> list[bl.Row]:
    """The result table: throughput and latency for information, errors and broken promises held to 0."""
    undocumented = sum(n for status, n in figures["by_status"].items() if status not in ("200", "429", "503"))
    return [
        bl.Row("requests completed", figures["completed"], unit="requests"),
        bl.Row("aggregate chars/s over 2 servers", figures["chars_per_s"], unit="chars/s"),
        bl.Row("time to first char p50", figures["ttfc_p50_ms"], unit="ms"),
        bl.Row("time to first char p95", figures["ttfc_p95_ms"], unit="ms"),
        bl.Row("answers other than 200/429/503", undocumented, goal="value<=", target=0),
        bl.Row("broken promises (see notes)", len(problems), goal="value<=", target=0),
    ]


def main() -> None:
    a = parse_args()
    if a.quick:
        a.clients, a.seconds = 32, 15.0
    server = a.database_url or os.environ.get(DATABASE_ENV) or os.environ.get("GENBOT_TEST_DATABASE_URL")
    if not server:
        raise SystemExit(f"needs a PostgreSQL server: --database-url or ${DATABASE_ENV}")
    with bl.scratch_dir(NAME) as tmp, fresh_postgres_database(server, prefix="genbot_bench") as database_url:
        workdir = Path(tmp)
        key = asyncio.run(prepare(workdir, database_url))
        figures, problems = asyncio.run(measure(a, workdir, key))
    notes = [f"by status: {figures['by_status']}", *problems]
    notes.append(
        f"v{figures['old_version']} → v{figures['new_version']} in {figures['switch_s']} s; "
        f"{figures['on_old']} streams on the old, {figures['on_new']} on the new; job {figures['job']}"
    )
    bl.report(NAME, rows_for(figures, problems), {"figures": figures, "environment": bl.environment(1)}, notes)
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

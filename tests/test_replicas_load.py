"""Replicas under load: two `genbot api` and two `genbot worker` processes on one PostgreSQL.

32 streaming clients spread over both servers for 15 s (the reduced form of
``bench/replicas_load.py``, same code in ``genbot.testing.replicas``) while a retrain job runs
and its version is activated half-way: no errors but the documented 429/503, every completed
request stored once with the text its client got, the job run once, and every stream finished
on the version it started on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from genbot.config import load_settings
from genbot.frontends.api.app import free_port
from genbot.service import GenbotService
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

pytestmark = pytest.mark.serial  # several processes that need the cores to themselves

TRAINING = {"block": 32, "batch": 8, "eval_every": 5}


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # replicas share a server database
async def test_streams_over_two_servers_survive_a_retrain_and_a_mid_run_activation(
    jobs_env: str, tmp_path: Path
) -> None:
    async with GenbotService(load_settings(), serving=False) as service:
        _, key = await service.keys.create("load", admin=True)
    ports = [free_port(), free_port()]
    commands = {f"api{i}": ["api", "--port", str(port)] for i, port in enumerate(ports)}
    commands |= {f"worker{i}": ["worker"] for i in range(2)}
    job = {"model": "alpha", "corpus": "plays", "steps": 5, "options": TRAINING}
    plan = LoadPlan(clients=32, seconds=15, model="alpha", job=job, length=120, seeds=8)
    with genbot_processes(tmp_path, commands, LOAD_ENV) as procs:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for i, url in enumerate(urls):
            wait_healthy(url, procs[f"api{i}"], tmp_path / f"api{i}.log")
        run = await run_load(urls, key, plan)
    rows, claims = await stored(run.job["id"])
    figures = summarise(run)
    print(figures)
    assert check_invariants(run, rows, claims) == []
    assert figures["on_old"] > 0 and figures["on_new"] > 0 and figures["servers"] == 2
    assert all(proc.returncode == 0 for proc in procs.values()), {n: p.returncode for n, p in procs.items()}

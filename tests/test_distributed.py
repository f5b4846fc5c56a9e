"""Training over several processes: ``genbot train --nproc N`` under torchrun, gloo on loopback.

The runs are real: torchrun starts two ranks that train a tiny model (hidden 32, one layer) on a
small generated corpus with one thread each, rendezvousing on a free loopback port
(``--standalone``). The equivalence tolerance is ``LOSS_TOLERANCE`` (README: "Training on
several processes"): the two ranks compute the same sums as one process in a different order, so
only float rounding separates them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from genbot.errors import InvalidRequest
from genbot.jobs import RetrainRequest
from genbot.jobs.spec import job_nproc, train_argv
from genbot.jobs.store import JobRow
from genbot.networks.checkpoint import load_model
from genbot.storage.tables import JobStatus
from genbot.training.data import random_windows
from genbot.training.distributed import Ranks, shard
from genbot.training.launch import is_main_rank, is_rank, torchrun_command
from tests.helpers import (
    FAST,
    alive,
    genbot,
    job_finished,
    kill_processes_mentioning,
    opened,
    processes_mentioning,
    wait_until,
)

pytestmark = pytest.mark.serial  # several processes that need the cores to themselves

# 2 ranks x batch B against 1 process x 2B: same windows, same order; float rounding only.
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4
TINY = ["--hidden=32", "--layers=1", "--emb=16", "--block=32", "--threads=1", "--lr=0.01"]


@pytest.fixture(autouse=True)
def _no_leftover_ranks(tmp_path: Path) -> Iterator[None]:
    """Kill every process (launcher, torchrun, rank) of this test's runs if the test failed midway."""
    yield
    kill_processes_mentioning(str(tmp_path))


def train_json(*args: str, timeout: float = 240) -> list[dict[str, Any]]:
    """Run ``genbot train … --json`` to its end; returns its JSON lines (exit status 0 asserted)."""
    done = genbot("train", *args, "--json", timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def curve(events: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(step, train loss, val loss) at every evaluation."""
    return [(e["step"], e["train_loss"], e["val_loss"]) for e in events if e["event"] == "eval"]


def assert_same_curve(a: list[tuple[int, float, float]], b: list[tuple[int, float, float]]) -> None:
    assert [step for step, _, _ in a] == [step for step, _, _ in b]
    for (step, train_a, val_a), (_, train_b, val_b) in zip(a, b, strict=True):
        assert abs(train_a - train_b) <= LOSS_TOLERANCE, (step, train_a, train_b)
        assert abs(val_a - val_b) <= LOSS_TOLERANCE, (step, val_a, val_b)


def max_weight_difference(a: Path, b: Path) -> float:
    left, right = load_model(a).network.state_dict(), load_model(b).network.state_dict()
    assert left.keys() == right.keys()
    return max(float((left[k] - right[k]).abs().max()) for k in left)


# ----- the shards and the launch command (no processes) ----------------------------------------


def test_the_ranks_shards_are_exactly_the_windows_one_process_draws() -> None:
    data = torch.arange(10_000)
    one = random_windows(data, 8, 16, torch.Generator().manual_seed(7))[0]
    global_batch = random_windows(data, 8, 16, torch.Generator().manual_seed(7))[0]
    parts = [shard(global_batch, Ranks(rank, 2)) for rank in (0, 1)]
    assert [p.shape[0] for p in parts] == [4, 4]
    assert torch.equal(torch.cat(parts), one)
    assert not torch.equal(parts[0], parts[1])


def test_torchrun_reads_none_of_the_training_command_as_its_own_options() -> None:
    from torch.distributed.run import parse_args

    child = [sys.executable, "-I", "-m", "genbot", "train", "--corpus=--nproc-per-node=9", "--nnodes=5", "-m", "x"]
    command = torchrun_command(child, nproc=2)
    args = parse_args(command[command.index("torch.distributed.run") + 1 :])
    assert (args.nproc_per_node, args.standalone, args.no_python, args.nnodes) == ("2", True, True, "1:1")
    assert [args.training_script, *args.training_script_args] == child
    several = torchrun_command(child, nproc=4, nnodes=3, rdzv_endpoint="10.0.0.5:29400")
    args = parse_args(several[several.index("torch.distributed.run") + 1 :])
    assert (args.nnodes, args.rdzv_endpoint, args.standalone) == ("3", "10.0.0.5:29400", False)


@pytest.mark.parametrize(
    ("nproc", "nnodes", "endpoint", "words"),
    [
        (0, 1, "", "--nproc"),
        (65, 1, "", "--nproc"),
        (2, 2, "", "--rdzv-endpoint"),
        (2, 2, "no-port", "HOST:PORT"),
        (2, 2, "host:99999", "HOST:PORT"),
        (2, 2, "--evil:1", "HOST:PORT"),
        (2, 0, "", "--nnodes"),
    ],
)
def test_a_launch_that_cannot_work_is_refused(nproc: int, nnodes: int, endpoint: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        torchrun_command(["python"], nproc=nproc, nnodes=nnodes, rdzv_endpoint=endpoint)


def test_rank_detection_follows_torchrun_variables() -> None:
    assert not is_rank({}) and is_main_rank({})
    rank1 = {"TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "1", "RANK": "1"}
    assert is_rank(rank1) and not is_main_rank(rank1)
    assert is_main_rank(rank1 | {"RANK": "0", "LOCAL_RANK": "0"})


def test_a_jobs_own_nproc_wins_over_the_workers_and_one_process_needs_no_launcher(tmp_path: Path) -> None:
    args = {"corpus_path": "/c.txt", "budget": {"steps": 5}, "options": {}}
    assert job_nproc(args, 4) == 4 and job_nproc(args | {"options": {"nproc": 2}}, 4) == 2
    assert "--nproc=4" in train_argv(args, model="m", out=tmp_path, threads=1, nproc=4)
    assert not any(a.startswith("--nproc") for a in train_argv(args, model="m", out=tmp_path, threads=1, nproc=1))
    asked = train_argv(args | {"options": {"nproc": 2}}, model="m", out=tmp_path, threads=1, nproc=4)
    assert [a for a in asked if a.startswith("--nproc")] == ["--nproc=2"]


def test_train_refuses_a_bad_launch_before_starting_anything(corpus_file: Path, tmp_path: Path) -> None:
    for bad in (["--nproc", "0"], ["--nproc", "2", "--nnodes", "2"], ["--nproc", "2", "--batch", "0"]):
        done = genbot("train", f"--corpus={corpus_file}", f"--out={tmp_path / 'm'}", "--steps=2", *bad)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


# ----- real runs: two gloo ranks on loopback -----------------------------------------------------


@pytest.mark.slow
def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b(corpus_file: Path, tmp_path: Path) -> None:
    common = [f"--corpus={corpus_file}", "--steps=12", "--eval-every=2", *TINY]
    two = train_json(*common, f"--out={tmp_path / 'two'}", "--batch=4", "--nproc=2")
    one = train_json(*common, f"--out={tmp_path / 'one'}", "--batch=8")

    # Rank 0 alone reports: one start, one done, every eval once.
    assert [e["event"] for e in two if e["event"] in ("start", "done")] == ["start", "done"]
    assert two[0]["world_size"] == 2 and two[-1]["world_size"] == 2 and one[-1]["world_size"] == 1
    assert_same_curve(curve(two), curve(one))
    assert abs(two[-1]["losses"]["val_block"] - one[-1]["losses"]["val_block"]) <= LOSS_TOLERANCE
    assert max_weight_difference(tmp_path / "two", tmp_path / "one") <= WEIGHT_TOLERANCE
    # The result is an ordinary model folder: it evaluates and generates like any other.
    loaded = load_model(tmp_path / "two")
    assert loaded.card.training["world_size"] == 2 and loaded.card.training["steps"] == 12
    evaluated = genbot("eval", str(tmp_path / "two"), f"--corpus={corpus_file}", "--iters=2", "--json")
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["val_block"] > 0
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_where_it_was_and_ends_as_if_never_stopped(
    corpus_file: Path, tmp_path: Path
) -> None:
    # Carried state too: each rank's lanes must come back to the rank that owns them.
    common = [f"--corpus={corpus_file}", "--steps=400", "--eval-every=20", "--carry-state", *TINY]
    out = tmp_path / "two"
    run = [sys.executable, "-m", "genbot", "train", *common, f"--out={out}", "--batch=8", "--nproc=2", "--json"]
    first = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.startswith("{") and json.loads(line)["event"] == "eval":
                break
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # launcher and torchrun; the ranks go with torchrun
        first.wait()
    assert wait_for_no_processes(str(out), 15), processes_mentioning(str(out))  # no orphaned rank
    killed_at = json.loads((out / "checkpoint" / "state.json").read_text())["counters"]["step"]
    assert 20 <= killed_at < 400

    resumed = train_json(*common, f"--out={out}", "--batch=8", "--nproc=2", "--resume")
    whole = train_json(*common, f"--out={tmp_path / 'one'}", "--batch=16")
    assert resumed[0]["resumed_at_step"] == killed_at and resumed[-1]["steps"] == 400
    after = [point for point in curve(whole) if point[0] > killed_at]
    assert_same_curve(curve(resumed), after)
    assert max_weight_difference(out, tmp_path / "one") <= WEIGHT_TOLERANCE


@pytest.mark.slow
def test_a_time_budget_stops_every_rank_at_the_same_step(corpus_file: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    budget = [f"--corpus={corpus_file}", f"--out={tmp_path / 'm'}", "--seconds=3", "--batch=4", "--nproc=2"]
    events = train_json(*budget, *TINY)
    took = time.monotonic() - started
    done = events[-1]
    assert done["event"] == "done" and done["world_size"] == 2 and done["steps"] > 0
    assert 3 <= done["seconds"] < 6, done["seconds"]
    assert load_model(tmp_path / "m").card.training["steps"] == done["steps"]
    assert took < 180 and not processes_mentioning(str(tmp_path))


def wait_for_no_processes(needle: str, timeout: float) -> bool:
    """Whether every process mentioning ``needle`` is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while processes_mentioning(needle):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# ----- jobs: a worker runs one job over several processes ---------------------------------------


@pytest.fixture
def worker_log(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def start_worker(tmp_path: Path, started: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    """``genbot worker --once`` in the background, its output in ``worker.log``."""
    log = (tmp_path / "worker.log").open("wb")
    command = [sys.executable, "-m", "genbot", "worker", "--once", *args]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started.append(proc)
    return proc


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat[1] == str(pid) and stat[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
async def test_a_worker_with_nproc_2_trains_a_job_over_two_ranks_and_publishes_it(
    sqlite_jobs_env: str, tmp_path: Path, worker_log: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_JOBS__NPROC", "2")  # the worker's [jobs] nproc
    async with opened() as service:
        job = await service.jobs.retrain(RetrainRequest(model="alpha", corpus="plays", steps=20, options=FAST))
        worker = start_worker(tmp_path, worker_log)
        final = await wait_until(job_finished(service, job.id), 240, "the job to finish")
        events = await service.jobs.events(job.id)
    assert worker.wait(timeout=60) == 0
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.result_version == 2 and final.metrics["steps"] == 20
    dones = [e.data for e in events if e.kind == "done"]
    assert len(dones) == 1 and dones[0]["world_size"] == 2
    assert any("with 2 training processes" in str(e.data.get("message", "")) for e in events)


@pytest.mark.slow
async def test_cancelling_a_two_process_job_stops_every_rank(
    sqlite_jobs_env: str, tmp_path: Path, worker_log: list[subprocess.Popen[bytes]]
) -> None:
    async with opened() as service:
        request = RetrainRequest(model="alpha", corpus="plays", seconds=300, options=FAST | {"nproc": 2})
        job = await service.jobs.retrain(request)
        worker = start_worker(tmp_path, worker_log)

        async def training() -> JobRow | None:
            current = await service.jobs.get(job.id)
            return current if "step" in current.progress else None

        running = await wait_until(training, 180, "both ranks to train")
        launcher = running.progress["pid"]
        ranks = children_of(launcher)
        assert len(ranks) == 2, ranks
        await service.jobs.cancel(job.id)
        final = await wait_until(job_finished(service, job.id), 30, "the job to be cancelled")
    assert worker.wait(timeout=60) == 0
    assert final.status == JobStatus.CANCELLED
    assert not [pid for pid in (launcher, *ranks) if alive(pid)], "every rank stops with its job"


@pytest.mark.slow
async def test_bad_input_found_by_the_ranks_fails_the_job_without_a_retry(
    sqlite_jobs_env: str, tmp_path: Path, worker_log: list[subprocess.Popen[bytes]]
) -> None:
    # The corpus (20,000 chars) is shorter than one window: only the trainer can tell.
    options = {"block": 50_000, "batch": 1, "nproc": 2}
    async with opened() as service:
        job = await service.jobs.retrain(RetrainRequest(model="alpha", corpus="plays", steps=5, options=options))
        start_worker(tmp_path, worker_log)
        final = await wait_until(job_finished(service, job.id), 180, "the job to fail")
    assert final.status == JobStatus.FAILED and final.attempts == 1
    assert final.error is not None and "too short" in final.error


def test_a_worker_asked_for_more_processes_than_allowed_refuses_to_start(sqlite_jobs_env: str) -> None:
    done = genbot("worker", "--once", "--nproc", "65", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--nproc must be between 1 and 64" in done.stderr

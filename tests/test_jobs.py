"""Background fine-tuning jobs with real worker processes, real training children and real databases.

Every test that takes ``jobs_env`` runs on a SQLite file and, when GENBOT_TEST_DATABASE_URL is
set, on PostgreSQL too. Trainings are tiny (hidden 32, at most 60 steps, one thread); ``SLOW``
steps take long enough (~0.1 s each) that a test can kill or cancel a run in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from genbot.config import load_settings
from genbot.errors import GenbotError, InvalidRequest, LeaseLost
from genbot.jobs import RetrainRequest
from genbot.jobs import store as jobs_store
from genbot.jobs.spec import train_argv
from genbot.jobs.store import (
    JobRow,
    NewEvent,
    NewJob,
    claim_next_job,
    create_job,
    get_job,
    list_events,
    renew_lease,
    request_cancel,
)
from genbot.networks.checkpoint import load_model
from genbot.service import GenbotService
from genbot.storage.db import Database
from genbot.storage.tables import JobStatus, utcnow
from genbot.versions.store import active_version
from tests.helpers import FAST, alive, genbot_here, job_finished, make_corpus_text, opened, wait_until

T = TypeVar("T")
SLOW = {"block": 128, "batch": 64, "eval_every": 10}


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    """Kill any worker a failed test left running."""
    yield
    while _STARTED:
        _STARTED.pop().kill()


def start_worker(tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``genbot worker`` in the background, its output going to ``<name>.log``."""
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "genbot", "worker", *args], stdout=log, stderr=subprocess.STDOUT)
    _STARTED.append(proc)
    return proc


async def messages(service: GenbotService, job_id: int) -> list[str]:
    """The worker messages in a job's log."""
    return [e.data["message"] for e in await service.jobs.events(job_id) if e.source == "worker"]


# ----- durability -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_killed_workers_job_resumes_from_its_checkpoint_on_another_worker(
    jobs_env: str, tmp_path: Path
) -> None:
    async with opened() as service:
        job = await service.jobs.retrain(RetrainRequest(model="alpha", corpus="plays", steps=60, options=SLOW))
        first = start_worker(tmp_path, "first")
        try:

            async def checkpointed() -> JobRow | None:
                # An eval event is emitted after the checkpoint it belongs to is on disk.
                current = await service.jobs.get(job.id)
                return current if "val_loss" in current.progress else None

            running = await wait_until(checkpointed, 90, "the first checkpoint")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert not running.finished
        killed_child = running.progress["pid"]

        second = start_worker(tmp_path, "second")  # not --once: it may start before the lease expires
        try:
            final = await wait_until(job_finished(service, job.id), 120, "the job to finish on the second worker")
        finally:
            second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        starts = [e.data for e in await service.jobs.events(job.id) if e.kind == "start"]
        log = await messages(service, job.id)

    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.attempts == 2
    assert not alive(killed_child), "the killed worker's training child must not outlive it"
    assert starts[0]["resumed_at_step"] == 0
    assert starts[-1]["resumed_at_step"] >= 10, starts  # resumed from a checkpoint, not from zero
    assert any("expired" in line for line in log), log
    assert final.result_version == 2 and final.metrics["steps"] == 60
    print(f"\nkilled at step {running.progress['step']}; resumed at step {starts[-1]['resumed_at_step']}")


@pytest.mark.slow
async def test_cancelling_a_running_job_stops_its_training_within_seconds(jobs_env: str, tmp_path: Path) -> None:
    # `retrain --wait` follows the job and exits 1 when it does not succeed.
    args = ["retrain", "alpha", "--corpus", "plays", "--seconds", "300", "--block", "32", "--batch", "8", "--wait"]
    waiter = subprocess.Popen([sys.executable, "-m", "genbot", *args], stdout=subprocess.PIPE, text=True)
    try:
        async with opened() as service:
            await wait_until(service.jobs.list, 60, "the job to be queued")  # then a --once worker finds it
            worker = start_worker(tmp_path, "worker", "--once")
            running = await wait_until(lambda: training(service), 90, "training to start")
            child = running.progress["pid"]
            assert alive(child)
            started = time.monotonic()
            requested = await service.jobs.cancel(running.id)
            assert requested.cancel_requested and not requested.finished
            final = await wait_until(job_finished(service, running.id), 15, "the job to be cancelled")
            latency = time.monotonic() - started
        assert worker.wait(timeout=30) == 0
        output, _ = waiter.communicate(timeout=30)
    finally:
        waiter.kill()

    assert final.status == JobStatus.CANCELLED and final.error is None
    assert latency < 5, latency
    assert not alive(child)
    assert waiter.returncode == 1 and "cancelled" in output
    print(f"\ncancelled {latency:.2f} s after the request")


async def training(service: GenbotService) -> JobRow | None:
    """The first job, once its training child has reported a step."""
    jobs = await service.jobs.list()
    return jobs[-1] if jobs and "step" in jobs[-1].progress else None


@pytest.mark.slow
async def test_a_stopped_worker_hands_its_job_back_to_the_queue(sqlite_jobs_env: str, tmp_path: Path) -> None:
    async with opened() as service:
        job = await service.jobs.retrain(RetrainRequest(model="alpha", corpus="plays", seconds=300, options=FAST))
        worker = start_worker(tmp_path, "worker")
        running = await wait_until(lambda: training(service), 90, "training to start")
        worker.send_signal(signal.SIGTERM)  # what `genbot serve` and `genbot worker` get on shutdown
        assert worker.wait(timeout=15) == 0
        released = await service.jobs.get(job.id)
        log = await messages(service, job.id)

    assert released.status == JobStatus.QUEUED and released.attempts == 0 and released.lease_owner is None
    assert not alive(running.progress["pid"])
    assert log[-1] == "released: the worker is shutting down"


async def test_a_job_whose_workers_keep_dying_fails_with_the_reason(db_url: str) -> None:
    async with Database.open(db_url, upgrade=True) as db:
        job = await create_job(db, NewJob(kind="retrain", model="m", args={}, max_attempts=2))
        t0 = utcnow()
        assert (await claim_next_job(db, "dead-1", 5, now=t0)) is not None
        assert await claim_next_job(db, "idle", 5, now=t0 + timedelta(seconds=1)) is None  # lease still held
        again = await claim_next_job(db, "dead-2", 5, now=t0 + timedelta(seconds=6))
        assert again is not None and again.id == job.id and again.attempts == 2
        with pytest.raises(LeaseLost):  # the first worker, had it survived, must stop
            await renew_lease(db, job.id, "dead-1", 5, attempt=1)
        assert await claim_next_job(db, "idle", 5, now=t0 + timedelta(seconds=12)) is None
        final = await get_job(db, job.id)

    assert final.status == JobStatus.FAILED
    assert final.error is not None
    assert "gave up after 2 attempt(s)" in final.error and "dead-2" in final.error and "expired" in final.error


async def test_bad_input_found_by_the_trainer_fails_the_job_with_its_error_line(sqlite_jobs_env: str) -> None:
    async with opened() as service:
        job = await service.jobs.retrain(RetrainRequest(model="alpha", corpus="plays", steps=5, options=FAST))
        Path(job.args["corpus_path"]).write_bytes(b"\x00\x01binary")  # spoiled after queueing
        await service.jobs.worker().run(once=True)
        final = await service.jobs.get(job.id)
        log = await service.jobs.events(job.id)
    assert final.status == JobStatus.FAILED and final.attempts == 1  # exit status 2: not retried
    assert final.error is not None and "binary" in final.error and not final.error.startswith("error:")
    assert any(e.source == "stderr" and "binary" in e.data["line"] for e in log)


async def test_a_job_the_worker_cannot_start_is_retried_then_failed_with_the_reason(sqlite_jobs_env: str) -> None:
    async with opened() as service:
        new = NewJob(kind="retrain", model="alpha", args={}, max_attempts=2)  # no corpus: cannot run
        job = await create_job(service.db, new)  # type: ignore[arg-type]
        for _ in range(2):
            await service.jobs.worker().run(once=True)
        assert await service.jobs.worker().run(once=True) == 0
        final = await service.jobs.get(job.id)
    assert final.status == JobStatus.FAILED
    assert final.error == (
        "gave up after 2 attempt(s); last: worker error: InvalidRequest('job argument corpus_path is not a path: None')"
    )


async def test_a_jobs_log_keeps_every_eval_and_only_the_newest_step_lines(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_store, "MAX_STEP_EVENTS", 3)
    async with Database.open(db_url, upgrade=True) as db:
        job = await create_job(db, NewJob(kind="retrain", model="m", args={}, max_attempts=1))
        assert await claim_next_job(db, "w", 30) is not None
        for step in range(1, 9):
            kind = "eval" if step % 4 == 0 else "step"
            event = NewEvent("train", kind, {"event": kind, "step": step})
            assert await renew_lease(db, job.id, "w", 30, attempt=1, events=[event]) is False
        lines = [(e.kind, e.data.get("step")) for e in await list_events(db, job.id) if e.source == "train"]
    assert lines == [("eval", 4), ("step", 5), ("step", 6), ("step", 7), ("eval", 8)]


async def test_cancelling_a_queued_job_is_immediate_and_a_finished_one_is_refused(db_url: str) -> None:
    async with Database.open(db_url, upgrade=True) as db:
        job = await create_job(db, NewJob(kind="retrain", model="m", args={}, max_attempts=3))
        assert (await request_cancel(db, job.id)).status == JobStatus.CANCELLED
        assert await claim_next_job(db, "w", 5) is None
        with pytest.raises(InvalidRequest, match="already cancelled"):
            await request_cancel(db, job.id)


# ----- concurrent claims ----------------------------------------------------------------------


async def test_concurrent_claims_hand_each_job_to_exactly_one_claimer(db_url: str) -> None:
    async with Database.open(db_url, upgrade=True) as db:
        ids = [(await create_job(db, NewJob(kind="retrain", model="m", args={}, max_attempts=3))).id for _ in range(12)]

    async def claim_all(db: Database, owner: str) -> list[int]:
        claimed = []
        while (job := await claim_next_job(db, owner, 60)) is not None:
            claimed.append(job.id)
        return claimed

    async with contextlib.AsyncExitStack() as stack:
        # Separate engines: on SQLite each has its own connections and in-process lock, so the
        # claims really contend in the database.
        handles = [await stack.enter_async_context(Database.open(db_url, upgrade=False)) for _ in range(4)]
        results = await asyncio.gather(*(claim_all(h, f"w{i}") for i, h in enumerate(handles)))
        jobs = [await get_job(handles[0], job_id) for job_id in ids]

    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == ids  # every job once, none twice
    assert all(job.status == JobStatus.RUNNING and job.attempts == 1 for job in jobs)


# ----- fine-tuning and bad input --------------------------------------------------------------


def accented_corpus(path: Path) -> Path:
    """The usual dialogue plus lines with characters the bundled test models have never seen."""
    lines = [f"NURSE:\nSeñor, ¿qué tal? «café» — {i}.\n\n" for i in range(60)]
    path.write_text(make_corpus_text(12_000, seed=4) + "".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow
async def test_fine_tuning_on_new_characters_registers_a_new_version(sqlite_jobs_env: str, tmp_path: Path) -> None:
    async with opened() as service:
        await service.corpora.add("accents", [accented_corpus(tmp_path / "accents.txt")])
    queued = await asyncio.to_thread(
        genbot_here, "retrain", "alpha", "--corpus", "accents", "--steps", "20", "--block", "32", "--batch", "8"
    )
    assert queued.returncode == 0, queued.stderr
    job_id = int(re.search(r"job (\d+) queued", queued.stdout).group(1))  # type: ignore[union-attr]

    async with opened() as service:
        assert await service.jobs.worker().run(once=True) == 1
        job = await service.jobs.get(job_id)
        active = await active_version(service.db, "alpha")  # type: ignore[arg-type]
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert {"é", "ñ", "¿", "«", "—"} <= set(job.metrics["added_chars"])
    assert job.parent_version == 1 and job.result_version == 2
    assert active is not None and active.version == 2 and active.job_id == job_id and active.corpus == "accents"
    model = load_model(Path(active.path))
    assert Path(active.path) == load_settings().data_dir / "models" / "alpha" / "v2"
    assert model.card.name == "alpha" and model.card.version == 2 and "é" in model.vocab
    curve = Path(job.metrics["loss_curve"])
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    shown = await asyncio.to_thread(genbot_here, "jobs", "show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and str(curve) in shown.stdout and "added chars" in shown.stdout
    logs = (await asyncio.to_thread(genbot_here, "jobs", "logs", str(job_id))).stdout
    assert '"event": "done"' in logs and "# " in logs and "registered alpha version 2" in logs


def test_a_jobs_arguments_become_a_resumable_train_command(tmp_path: Path) -> None:
    scratch = {"corpus_path": "/c/input.txt", "parent_path": None, "budget": {"steps": 9},
               "options": {"hidden": 32, "carry_state": True, "bf16": False, "weight_decay": 0.1}}  # fmt: skip
    argv = train_argv(scratch, model="alpha", out=tmp_path, threads=2)
    assert argv == ["train", "--corpus=/c/input.txt", f"--out={tmp_path}", "--name=alpha", "--json", "--resume",
                    "--threads=2", "--steps=9", "--hidden=32", "--weight-decay=0.1", "--carry-state", "--no-bf16",
                    "--", "charrnn"]  # fmt: skip
    tune = scratch | {"parent_path": "/m/v1", "options": {}}
    tuned = train_argv(tune, model="alpha", out=tmp_path, threads=1)
    assert "--from=/m/v1" in tuned and not any(arg.startswith("--hidden") for arg in tuned)


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"corpus": "nope", "steps": 5}, "unknown corpus 'nope'"),
    ({"model": "nosuch", "steps": 5}, "unknown model 'nosuch' (available: alpha, beta)"),
    ({"steps": 0}, "--steps must be above 0"),
    ({"seconds": -3.0}, "--seconds must be above 0"),
    ({"steps": 10**12}, "--steps must be above 0 and at most 1,000,000 ([jobs] max_steps)"),
    ({}, "give exactly one budget"),
    ({"steps": 5, "seconds": 5.0}, "give exactly one budget"),
    ({"steps": 5, "options": {"hidden": 64}}, "--hidden: a fine-tune keeps its parent's architecture"),
    ({"steps": 5, "source": "7"}, "model 'alpha' has no version 7"),
    ({"steps": 5, "source": "latest"}, "--from must be 'active', 'scratch' or a version number"),
    ({"steps": 5, "options": {"lr": -1.0}}, "--lr: input should be greater than 0 (got -1.0)"),
    (
        {"steps": 5, "source": "scratch", "options": {"cell": "transformer"}},
        "--cell: input should be 'rnn', 'lstm' or 'gru' (got 'transformer')",
    ),
    ({"steps": 5, "max_attempts": 0}, "--max-attempts must be between 1 and 100"),
]


async def test_bad_requests_are_refused_clearly_and_queue_nothing(sqlite_jobs_env: str) -> None:
    async with opened() as service:
        for fields, message in BAD_REQUESTS:
            request = RetrainRequest(**{"model": "alpha", "corpus": "plays"} | fields)
            with pytest.raises(GenbotError, match=re.escape(message)):
                await service.jobs.retrain(request)
        assert await service.jobs.list() == []

    proc = await asyncio.to_thread(genbot_here, "retrain", "alpha", "--corpus", "nope", "--steps", "5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown corpus 'nope': register it first with `genbot corpus add`"
    proc = await asyncio.to_thread(genbot_here, "jobs", "show", "99")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: no job with id 99"

"""The worker: claims jobs and runs each one's training in a child process under a lease.

One job at a time per worker; run several workers (processes, machines) to run several jobs.
While a child trains, the worker, about once a second:

* stores the child's new JSON lines as the job's log and its latest figures as ``progress``,
  renewing the lease with the same write (and at least every ``heartbeat_seconds``);
* checks ``cancel_requested`` and, if set, stops the child (cancelled within a few seconds);
* stops the child and gives up the job if its lease was taken over (``LeaseLost``).

How an attempt ends: exit 0 → the model is published and the job ``succeeded``; exit 2 (genbot's
"bad input" status: corpus, options, weights) → ``failed`` with the child's error line, since
retrying cannot help; any other exit (a crash, the OOM killer) → back in the queue with the
reason, until ``max_attempts`` is used up. The child always resumes from its last checkpoint
(``--resume`` in ``data_dir/jobs/<id>/run``), so a re-claimed job continues, not restarts.

A job with ``nproc`` > 1 (its own option, or the worker's ``[jobs] nproc``) runs its child under
torchrun on this machine: one process per rank, e.g. one per GPU. The worker supervises torchrun
as it would a single child; stopping torchrun stops every rank (see ``genbot.training.distributed``).
A rank's bad-input error still fails the job: torchrun's own exit status is 1, so the status the
rank meant comes from its ``error`` JSON line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import Any

from genbot.config import Settings
from genbot.errors import LeaseLost
from genbot.jobs import store as queue
from genbot.jobs.publish import job_dir, publish
from genbot.jobs.runner import TrainingProcess, child_command, describe_exit
from genbot.jobs.spec import job_nproc, train_argv
from genbot.jobs.store import JobRow, NewEvent, message
from genbot.storage.db import Database
from genbot.storage.tables import JobStatus
from genbot.training.launch import check_launch, torchrun_command

log = logging.getLogger("genbot.jobs.worker")
CANCEL_POLL_S = 1.0  # how often a running job's cancel flag is read (and new log lines stored)
BAD_INPUT_STATUS = 2  # `genbot train` exits 2 for genbot errors (bad corpus, options, weights)
MAX_STDERR_EVENTS = 200  # stderr lines stored per attempt (the rest only count towards the tail)
_PROGRESS_KEYS = ("step", "epoch", "progress", "train_loss", "val_loss", "best_val_loss", "chars_per_s", "eta",
                  "elapsed", "total_steps", "resumed_at_step", "added_chars", "sample")  # fmt: skip


def default_owner() -> str:
    """A worker name unique across machines and restarts: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Claims and runs jobs until stopped (or, with ``once``, after one job)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        owner: str | None = None,
        lease_s: float | None = None,
        poll_s: float | None = None,
        heartbeat_s: float | None = None,
        threads: int | None = None,
        nproc: int | None = None,
    ) -> None:
        cfg = settings.jobs
        self.db, self.settings = db, settings
        self.owner = owner or default_owner()
        self.lease_s = lease_s or cfg.lease_seconds
        self.poll_s = poll_s or cfg.poll_seconds
        self.heartbeat_s = min(heartbeat_s or cfg.heartbeat_seconds, self.lease_s / 3)
        self.threads = threads or cfg.train_threads
        self.nproc = nproc or cfg.nproc
        check_launch(self.nproc, 1, "")  # a worker that could launch nothing refuses to start
        self.stop = asyncio.Event()

    async def run(self, stop: asyncio.Event | None = None, *, once: bool = False) -> int:
        """Run jobs until ``stop`` is set; with ``once``, return after one job or none queued. Returns jobs run."""
        self.stop = stop or self.stop
        ran = 0
        log.info("worker %s started (lease %.0f s, poll %.1f s)", self.owner, self.lease_s, self.poll_s)
        while not self.stop.is_set():
            job = await self._claim()
            if job is not None:
                await self.run_job(job)
                ran += 1
            if once:
                break
            if job is None:
                await _sleep_unless(self.stop, self.poll_s)
        return ran

    async def _claim(self) -> JobRow | None:
        """The next job for this worker, or None (also when the database is unreachable: logged)."""
        try:
            return await queue.claim_next_job(self.db, self.owner, self.lease_s)
        except Exception:
            log.exception("claiming a job failed; trying again in %.1f s", self.poll_s)
            return None

    async def run_job(self, job: JobRow) -> None:
        """Run one claimed job to its end (or until this worker loses it or is stopped)."""
        log.info("job %d (%s, attempt %d) claimed by %s", job.id, job.model, job.attempts, self.owner)
        try:
            await _Attempt(self, job).run()
        except LeaseLost as e:
            log.warning("job %d: %s; leaving it to its new worker", job.id, e)
        except Exception as e:  # a bug or an outage: put the job back with the reason, keep working
            log.exception("job %d: the worker failed while running it", job.id)
            with contextlib.suppress(Exception):
                await queue.retry_job(self.db, job.id, self.owner, f"worker error: {e!r}", attempt=job.attempts)


class _Attempt:
    """One attempt at one job: the child process, its buffered log lines, and how it ended."""

    def __init__(self, worker: Worker, job: JobRow) -> None:
        self.worker, self.job, self.db = worker, job, worker.db
        self.pending: list[NewEvent] = []
        self.progress: dict[str, Any] = dict(job.progress) | {"attempt": job.attempts, "worker": worker.owner}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.stderr_lines = 0
        self.done: dict[str, Any] | None = None
        self.error_status: int | None = None  # the exit status a failed rank reported in its "error" line
        self.error_message: str | None = None  # … and its reason (torchrun's report would bury it in stderr)
        self.last_renewal = time.monotonic()

    async def run(self) -> None:
        """Start the child, supervise it, and record the outcome."""
        out = job_dir(self.worker.settings, self.job.id) / "run"
        out.mkdir(parents=True, exist_ok=True)
        threads, nproc = self.worker.threads, job_nproc(self.job.args, self.worker.nproc)
        argv = train_argv(self.job.args, model=self.job.model, out=out, threads=threads, nproc=nproc)
        command = await asyncio.to_thread(child_command, argv)
        if nproc > 1:
            command = torchrun_command(command, nproc=nproc)
        child = await TrainingProcess.spawn(command, self.on_event, self.on_stderr, cwd=out.parent)
        self.progress["pid"] = child.pid
        resuming = "resuming from its checkpoint" if (out / "checkpoint" / "state.json").exists() else "starting"
        what = (
            f"training process {child.pid}" if nproc == 1 else f"torchrun {child.pid} with {nproc} training processes"
        )
        self.pending.append(message(f"{what} on {socket.gethostname()} {resuming}"))
        ending = await self._supervise(child)
        await self._record(ending, child)

    # ----- callbacks from the child's output ----------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        """Keep a trainer event for the log and fold its figures into ``progress``."""
        kind = str(event.get("event"))
        self.pending.append(NewEvent("train", kind, event))
        self.progress |= {k: event[k] for k in _PROGRESS_KEYS if k in event}
        if kind == "done":
            self.done = event
        elif kind == "error" and isinstance(event.get("exit_code"), int):
            self.error_status = event["exit_code"]
            self.error_message = str(event.get("error", ""))[:2000] or None

    def on_stderr(self, line: str) -> None:
        """Keep a stderr line for the failure message (and the log, up to a limit)."""
        self.stderr_tail.append(line)
        self.stderr_lines += 1
        if self.stderr_lines <= MAX_STDERR_EVENTS:
            self.pending.append(NewEvent("stderr", "message", {"line": line}))

    # ----- supervision ------------------------------------------------------------------------

    async def _supervise(self, child: TrainingProcess) -> str:
        """Wait for the child while syncing every second; returns exited / cancelled / stopped."""
        waiter = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(self.worker.stop.wait())
        try:
            while True:
                await asyncio.wait({waiter, stopping}, timeout=CANCEL_POLL_S, return_when=asyncio.FIRST_COMPLETED)
                if waiter.done():
                    return "exited"
                if stopping.done():
                    await child.terminate()
                    return "stopped"
                if await self._sync_or_stop(child):
                    return "cancelled"
        finally:
            stopping.cancel()

    async def _sync_or_stop(self, child: TrainingProcess) -> bool:
        """Store progress and read the cancel flag; stop the child if cancelled (True) or the lease is lost."""
        try:
            cancel = await self._sync()
        except LeaseLost:
            await child.terminate()
            raise
        except Exception:  # a database hiccup: keep training; the lease covers a short outage
            log.exception("job %d: storing progress failed; will retry", self.job.id)
            return False
        if cancel:
            await child.terminate()
        return cancel

    async def _sync(self) -> bool:
        """Write pending events + progress (renewing the lease) when there are any or a heartbeat is due."""
        heartbeat_due = time.monotonic() - self.last_renewal >= self.worker.heartbeat_s
        if not self.pending and not heartbeat_due:
            return await queue.cancel_requested(self.db, self.job.id)
        events, self.pending = self.pending, []
        try:
            cancel = await queue.renew_lease(
                self.db, self.job.id, self.worker.owner, self.worker.lease_s,
                attempt=self.job.attempts, progress=dict(self.progress), events=events,
            )  # fmt: skip
        except BaseException:
            self.pending = events + self.pending
            raise
        self.last_renewal = time.monotonic()
        return cancel

    # ----- outcome ----------------------------------------------------------------------------

    async def _record(self, ending: str, child: TrainingProcess) -> None:
        """Store the last log lines and the job's new state."""
        returncode = await child.wait()
        cancel = await self._sync()
        if ending == "stopped":
            await self._call(queue.release_job, "the worker is shutting down")
        elif cancel or ending == "cancelled":
            await self._finish(JobStatus.CANCELLED, error=None)
        elif returncode == 0 and self.done is not None:
            await self._succeed()
        elif BAD_INPUT_STATUS in (returncode, self.error_status):
            await self._finish(JobStatus.FAILED, error=self._error_text(returncode))
        else:
            await self._call(queue.retry_job, self._error_text(returncode))

    async def _succeed(self) -> None:
        """Publish the trained model as a new version and mark the job succeeded."""
        assert self.done is not None
        try:
            published = await publish(self.db, self.worker.settings, self.job, self.done)
        except Exception as e:
            log.exception("job %d: publishing the trained model failed", self.job.id)
            await self._finish(JobStatus.FAILED, error=f"publishing the trained model failed: {e}")
            return
        note = "activated" if published.activated else "not activated (the active version is at least as good)"
        events = [message(f"registered {self.job.model} version {published.version.version}: {note}")]
        await queue.finish_job(
            self.db, self.job.id, self.worker.owner, JobStatus.SUCCEEDED, attempt=self.job.attempts,
            metrics=published.metrics, result_version=published.version.version, events=events,
        )  # fmt: skip
        log.info("job %d succeeded: %s version %d", self.job.id, self.job.model, published.version.version)

    async def _finish(self, status: JobStatus, error: str | None) -> None:
        """Mark the job finished (failed or cancelled)."""
        await queue.finish_job(self.db, self.job.id, self.worker.owner, status, attempt=self.job.attempts, error=error)
        log.info("job %d %s%s", self.job.id, status.value, f": {error}" if error else "")

    async def _call(self, action: Any, reason: str) -> None:
        """``retry_job`` or ``release_job`` for this attempt."""
        await action(self.db, self.job.id, self.worker.owner, reason, attempt=self.job.attempts)
        log.info("job %d back in the queue: %s", self.job.id, reason)

    def _error_text(self, returncode: int) -> str:
        """The child's own error line if it printed one, else how it ended plus its last stderr lines."""
        if self.error_message:
            return self.error_message
        errors = [line for line in self.stderr_tail if line.startswith("error:")]
        if errors:
            return errors[-1].removeprefix("error:").strip()
        tail = " | ".join(list(self.stderr_tail)[-5:])
        return f"training process {describe_exit(returncode)}" + (f": {tail}" if tail else "")


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

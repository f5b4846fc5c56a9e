"""The training child process: ``python -m genbot train … --json --resume`` and what it says.

Training runs in its own process so it never blocks the worker's event loop, can use all the
threads it is given, and can be stopped at once (SIGTERM, then SIGKILL). The child is tied to
the worker: on Linux it gets SIGKILL when the worker dies (``PR_SET_PDEATHSIG``), so a worker
killed with ``kill -9`` never leaves an orphan that keeps writing checkpoints while another
worker resumes the job; elsewhere it dies at its next write to the closed stdout pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TERMINATE_GRACE_S = 5.0  # after SIGTERM, how long the child gets before SIGKILL
_LINE_LIMIT = 1 << 20  # longest stdout/stderr line read (samples are a few hundred chars)
_PR_SET_PDEATHSIG = 1

EventHandler = Callable[[dict[str, Any]], None]
LineHandler = Callable[[str], None]


class TrainingProcess:
    """A running ``genbot train`` child whose JSON lines and stderr go to callbacks."""

    def __init__(self, proc: asyncio.subprocess.Process, on_event: EventHandler, on_stderr: LineHandler) -> None:
        self.proc = proc
        self._readers = asyncio.gather(
            _read_lines(proc.stdout, lambda line: _dispatch(line, on_event, on_stderr)),
            _read_lines(proc.stderr, on_stderr),
        )

    @classmethod
    async def start(
        cls, argv: list[str], on_event: EventHandler, on_stderr: LineHandler, *, cwd: Path | None = None
    ) -> TrainingProcess:
        """Start ``python -m genbot <argv>`` in its own session (the worker's Ctrl-C does not reach it)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "genbot",
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
            limit=_LINE_LIMIT,
        )
        return cls(proc, on_event, on_stderr)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    async def wait(self) -> int:
        """Wait until the child has exited and its output is read; returns the exit status."""
        await self._readers
        return await self.proc.wait()

    async def terminate(self, grace_s: float = TERMINATE_GRACE_S) -> int:
        """Stop the child: SIGTERM, then SIGKILL after ``grace_s``; returns the exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            return await asyncio.wait_for(self.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            return await self.wait()


def describe_exit(returncode: int) -> str:
    """'exited with status 3' or 'was killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


async def _read_lines(stream: asyncio.StreamReader | None, handle: LineHandler) -> None:
    """Feed each decoded line of ``stream`` to ``handle`` until EOF."""
    if stream is None:
        return
    while line := await stream.readline():
        handle(line.decode("utf-8", errors="replace").rstrip("\n"))


def _dispatch(line: str, on_event: EventHandler, on_other: LineHandler) -> None:
    """A JSON object line is a trainer event; anything else is passed on as text."""
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict) and "event" in event:
        on_event(event)
    elif line.strip():
        on_other(line)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec

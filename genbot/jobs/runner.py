"""The training child process: ``python -m genbot train … --json --resume`` and what it says.

Training runs in its own process so it never blocks the worker's event loop, can use all the
threads it is given, and can be stopped at once (SIGTERM, then SIGKILL). The child is tied to
the worker: on Linux it gets SIGKILL when the worker dies (``PR_SET_PDEATHSIG``), so a worker
killed with ``kill -9`` never leaves an orphan that keeps writing checkpoints while another
worker resumes the job; elsewhere it dies at its next write to the closed stdout pipe.

The child trains on uploaded text with options an admin typed, so it gets no more than it needs:
an allow-listed environment (no Discord token, database URL, API keys or anything named like a
secret) and Python's isolated mode (``-I``: no ``PYTHON*`` variables, no current directory on
``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import genbot

# The only variables a training child inherits (plus LC_*): locale, temp files, where to find
# programs and the home folder; CUDA_VISIBLE_DEVICES so --device cuda uses the GPUs meant for it.
_ENV_ALLOWED = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "CUDA_VISIBLE_DEVICES"})
# Belt and braces: a name that looks like a credential is dropped even if allowed above.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
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
        """Start ``python -I -m genbot <argv>`` (see ``spawn``); the first call probes how genbot is found."""
        return await cls.spawn(await asyncio.to_thread(child_command, argv), on_event, on_stderr, cwd=cwd)

    @classmethod
    async def spawn(
        cls, command: list[str], on_event: EventHandler, on_stderr: LineHandler, *, cwd: Path | None = None
    ) -> TrainingProcess:
        """Run ``command`` as a training child: its own session (the worker's Ctrl-C does not reach it),
        dying with the worker, and a scrubbed environment (``child_env``: no tokens, keys or passwords)."""
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=child_env(),
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


def child_command(argv: list[str]) -> list[str]:
    """The training child's full command line: this interpreter, isolated, running genbot's CLI.

    ``-I`` drops the current directory from ``sys.path``; an installed (or editable) genbot is still
    found through site-packages. A genbot imported from a bare source tree is not, so then its
    folder is put on the child's path explicitly (never by passing the parent's PYTHONPATH on).
    """
    if _found_in_isolation():
        return [sys.executable, "-I", "-m", "genbot", *argv]
    root = str(Path(genbot.__file__).resolve().parent.parent)
    boot = f"import runpy, sys; sys.path.insert(0, {root!r}); runpy.run_module('genbot', run_name='__main__')"
    return [sys.executable, "-I", "-c", boot, *argv]


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a training child gets: an allow-list of the parent's, never a secret.

    ``genbot train`` reads no settings (everything it needs is on its command line), so no
    ``GENBOT_*`` variable is passed on: the database URL may hold a password, and the Discord
    token and API keys have no business in a process that runs on uploaded data.
    """
    source = os.environ if environ is None else environ
    env = {}
    for name, value in source.items():
        allowed = name in _ENV_ALLOWED or name.startswith("LC_")
        if allowed and not _SECRET_NAME.search(name):
            env[name] = value
    return env


@functools.cache
def _found_in_isolation() -> bool:
    """Whether ``python -I`` finds the genbot package this process runs (checked once per process)."""
    here = str(Path(genbot.__file__).resolve())
    probe = "import genbot, pathlib; print(pathlib.Path(genbot.__file__).resolve())"
    try:
        found = subprocess.run(
            [sys.executable, "-I", "-c", probe], env=child_env(), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and found.stdout.strip() == here


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

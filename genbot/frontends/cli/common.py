"""What every command module shares: error translation, the service runner, JSON output, logging, signals.

Errors from genbot's own tree become one ``error: …`` line on stderr and the exit status the
error table in ``genbot.errors`` gives (2 for a usage error, 1 for a runtime failure); an
``OSError`` is a runtime failure (1: disk full, permission denied) unless it says a path given is
wrong (2: no such file, not a folder); anything else escaping is a
bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer

from genbot.errors import GenbotError, describe

log = logging.getLogger("genbot.serve")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
RUNTIME_FAILURE = 1  # exit status of a command that was asked right but failed
USAGE_ERROR = 2  # exit status of a command given wrong arguments (also Typer's own)
BAD_PATH = (FileNotFoundError, NotADirectoryError, IsADirectoryError)  # a path argument that is wrong: usage
STOP_GRACE_S = 30.0  # how long background loops get to wind down after Ctrl-C / SIGTERM


def friendly_errors(fn: F) -> F:
    """Turn genbot errors into a one-line message and their exit status (``describe(e).exit_code``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenbotError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(describe(e).exit_code) from None
        except OSError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(USAGE_ERROR if isinstance(e, BAD_PATH) else RUNTIME_FAILURE) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def with_service(body: Callable[[Any], Awaitable[T]], *, serving: bool = True) -> T:
    """Open the service from bot.toml + environment, run ``body(service)``, close it.

    ``serving=False`` opens the database and jobs only (admin commands, the worker): no model
    is loaded, and other processes' running generations are left alone.
    """
    from genbot.config import load_settings
    from genbot.runtime import set_torch_threads
    from genbot.service import GenbotService

    settings = load_settings()
    if serving:
        set_torch_threads(settings.engine.torch_threads)

    async def main() -> T:
        async with GenbotService(settings, serving=serving) as service:
            return await body(service)

    return asyncio.run(main())


def emit_json(obj: Any, fields: tuple[str, ...] | None = None) -> None:
    """One JSON object per line on stdout (a row: ``json_ready``), flushed so pipes see it at once."""
    data = json_ready(obj, fields) if is_dataclass(obj) else obj
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_report(report: dict[str, Any], as_json: bool) -> None:
    """A report of figures: one JSON object, or one aligned ``key: value`` line per figure."""
    if as_json:
        emit_json(report)
        return
    for key, value in report.items():
        typer.echo(f"{key:>18}: {value}")


def json_ready(row: Any, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A stored row (a dataclass) as plain data: datetimes as ISO strings, only ``fields`` if given."""
    data = asdict(row)
    if fields is not None:
        data = {name: data[name] for name in fields}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def resolve_model_dir(model: str) -> Path:
    """A model folder path, or the folder of a bundled plugin with that name."""
    from genbot.errors import CheckpointError

    path = Path(model)
    if path.is_dir():
        return path
    from genbot.config import load_settings

    candidate = load_settings().plugins_dir / model
    if "/" not in model and candidate.is_dir():
        return candidate
    raise CheckpointError(f"{model!r} is neither a model folder nor a bundled plugin name")


def setup_logging(level: str) -> None:
    """Log genbot's messages at ``level`` (other libraries' at WARNING) to stderr, with time and source."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("genbot").setLevel(level)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT (Ctrl-C) or SIGTERM, so loops can stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_stopped(loops: dict[str, Coroutine[Any, Any, Any]], stop: asyncio.Event) -> None:
    """Run ``loops`` as tasks until ``stop`` is set or one of them fails; then let the rest wind down."""
    tasks = {asyncio.create_task(coro, name=f"genbot-{name}"): name for name, coro in loops.items()}
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in (t for t in tasks if t.done() and t.exception() is not None):
        log.error("%s stopped with an error; shutting down", tasks[task], exc_info=task.exception())
    stop.set()
    _, pending = await asyncio.wait([*tasks, stopper], timeout=STOP_GRACE_S)
    for task in pending:
        log.warning("%s did not stop within %.0f s; cancelling it", tasks.get(task, "a task"), STOP_GRACE_S)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

"""What a retrain job is asked to do, checked before anything is queued, and the trainer command it becomes.

A ``RetrainRequest`` is what an admin types (``genbot retrain MODEL --corpus NAME …``), posts to
the API, asks Discord for, or what a schedule stores. ``check`` rejects nonsense up front (a bad
or oversized budget, options outside the one schema ``TrainingOptions``, architecture options on
a fine-tune, a batch too big for ``[jobs] max_batch_chars``, more processes than ``[jobs]
max_nproc``) so nothing is queued that can only fail. ``train_argv`` turns a queued job's stored
arguments into the ``genbot train`` command line the worker runs in a child process: every value
is re-checked and written as ``--name=value``, and the list ends with ``-- charrnn``, so no value
can ever be read as another option or as the positional argument.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genbot.config import JobsSettings
from genbot.errors import InvalidRequest
from genbot.training.options import ARCHITECTURE, DEFAULT_BATCH, DEFAULT_BLOCK, TrainingOptions, flag

# Options passed straight to `genbot train` (CLI spelling with underscores → --dashes).
HYPERPARAMETERS = tuple(TrainingOptions.model_fields)
BUDGETS = ("steps", "epochs", "seconds")
MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database
MAX_ATTEMPTS = 100
# What a schedule may store besides model and corpus (RetrainRequest.to_args).
_STORED = frozenset({"source", "steps", "epochs", "seconds", "options", "max_attempts"})


@dataclass(frozen=True, kw_only=True)
class RetrainRequest:
    """A retrain as asked for: model, corpus, starting point, budget and hyperparameters."""

    model: str
    corpus: str  # a registered corpus name
    source: str = "active"  # active | scratch | a version number
    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # TrainingOptions that were given
    max_attempts: int | None = None  # None: [jobs] max_attempts

    def budget(self) -> dict[str, float | int]:
        """The budget(s) that were given, as {name: value}."""
        return {name: getattr(self, name) for name in BUDGETS if getattr(self, name) is not None}

    def to_args(self) -> dict[str, Any]:
        """The request as plain JSON data (what a schedule stores)."""
        data = dataclasses.asdict(self) | {"options": TrainingOptions.parse(dict(self.options)).given()}
        return {k: v for k, v in data.items() if v is not None and k not in ("model", "corpus")}

    @classmethod
    def from_args(cls, model: str, corpus: str, args: Any) -> RetrainRequest:
        """The request a schedule stored with ``to_args``, re-validated (the row may predate today's rules)."""
        if not isinstance(args, dict):
            raise InvalidRequest(f"stored job arguments must be a mapping, got {type(args).__name__}")
        unknown = sorted(set(args) - _STORED)
        if unknown:
            raise InvalidRequest(f"stored job arguments have unknown field(s): {', '.join(map(str, unknown))}")
        options = TrainingOptions.parse(args.get("options", {})).given()
        request = cls(model=model, corpus=corpus, **(args | {"options": options}))
        _check_types(request)
        return request


def parse_source(source: object) -> int | None:
    """``active`` / ``scratch`` → None, a version number → int; anything else is refused."""
    if source in ("active", "scratch"):
        return None
    # isascii: "²" and other Unicode digits pass isdigit() but are no version number.
    if isinstance(source, str) and source.isascii() and source.isdigit() and 1 <= int(source) <= MAX_VERSION:
        return int(source)
    shown = repr(source) if len(repr(source)) <= 40 else repr(source)[:39] + "…"
    raise InvalidRequest(f"--from must be 'active', 'scratch' or a version number, got {shown}")


def check(request: RetrainRequest, limits: JobsSettings | None = None) -> TrainingOptions:
    """Refuse a request the trainer could not run (InvalidRequest naming the option); returns its options."""
    limits = limits or JobsSettings()
    _check_types(request)
    parse_source(request.source)
    _check_budget(request, limits)
    _check_nproc(request.options.get("nproc"), limits)
    options = TrainingOptions.parse(dict(request.options))
    arch = [name for name in ARCHITECTURE if name in options.given()]
    if arch and request.source != "scratch":
        flags = ", ".join(flag(name) for name in arch)
        raise InvalidRequest(f"{flags}: a fine-tune keeps its parent's architecture; use --from scratch to change it")
    if request.max_attempts is not None and not 1 <= request.max_attempts <= MAX_ATTEMPTS:
        raise InvalidRequest(f"--max-attempts must be between 1 and {MAX_ATTEMPTS}")
    chars = (options.batch or DEFAULT_BATCH) * (options.block or DEFAULT_BLOCK)
    if chars > limits.max_batch_chars:
        raise InvalidRequest(
            f"--batch x --block is {chars:,} characters per step; at most {limits.max_batch_chars:,} "
            "([jobs] max_batch_chars)"
        )
    return options


def _check_types(request: RetrainRequest) -> None:
    """Budgets are numbers (an int for steps), max_attempts an int, options a mapping: never text or bools."""
    if not isinstance(request.source, str):
        raise InvalidRequest("--from must be 'active', 'scratch' or a version number")
    if request.steps is not None and not _is_int(request.steps):
        raise InvalidRequest(f"--steps must be a whole number, got {request.steps!r}")
    for name in ("epochs", "seconds"):
        value = getattr(request, name)
        if value is not None and not (_is_int(value) or isinstance(value, float)):
            raise InvalidRequest(f"--{name} must be a number, got {value!r}")
    if request.max_attempts is not None and not _is_int(request.max_attempts):
        raise InvalidRequest(f"--max-attempts must be a whole number, got {request.max_attempts!r}")
    if not isinstance(request.options, Mapping):
        raise InvalidRequest("training options must be a mapping of names to values")


def _is_int(value: object) -> bool:
    """An int that is not a bool (True is an int to Python, not a budget to anyone)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_budget(request: RetrainRequest, limits: JobsSettings) -> None:
    """Exactly one positive, finite budget no bigger than its [jobs] cap."""
    budget = request.budget()
    if len(budget) != 1:
        raise InvalidRequest("give exactly one budget: --steps, --epochs or --seconds")
    (name, value), = budget.items()  # fmt: skip
    cap = {"steps": limits.max_steps, "epochs": limits.max_epochs, "seconds": limits.max_seconds}[name]
    if not (math.isfinite(value) and 0 < value <= cap):
        shown = f"{cap:,}" if isinstance(cap, int) else f"{cap:,g}"
        raise InvalidRequest(f"--{name} must be above 0 and at most {shown} ([jobs] max_{name}), got {value}")


def _check_nproc(nproc: object, limits: JobsSettings) -> None:
    """A job may ask for 1 to ``[jobs] max_nproc`` processes (whoever queues it: each is a process forked)."""
    # Other types (text, bools) are TrainingOptions' to refuse, with its own wording.
    if isinstance(nproc, int) and not isinstance(nproc, bool) and not 1 <= nproc <= limits.max_nproc:
        raise InvalidRequest(f"--nproc must be between 1 and {limits.max_nproc} ([jobs] max_nproc), got {nproc}")


def job_nproc(args: Mapping[str, Any], default: int = 1) -> int:
    """How many training processes a job runs: its own ``nproc`` option, else the worker's ``[jobs] nproc``."""
    asked = TrainingOptions.parse(args.get("options", {})).nproc
    return asked if asked is not None else default


def train_argv(args: Mapping[str, Any], *, model: str, out: Path, threads: int, nproc: int = 1) -> list[str]:
    """The ``genbot train`` arguments for a job's stored ``args`` (resumable, JSON progress).

    The stored arguments are checked again here: a row written by an older version, or edited in
    the database, must not be able to smuggle an option in. ``nproc`` is the worker's default
    number of processes, used when the job did not ask for its own.
    """
    argv = ["train", _opt("corpus", _path(args.get("corpus_path"), "corpus_path")), _opt("out", str(out))]
    argv += [_opt("name", model), "--json", "--resume", _opt("threads", int(threads))]
    if args.get("parent_path") is not None:
        argv.append(_opt("from", _path(args["parent_path"], "parent_path")))
    argv += [_opt(name, value) for name, value in _stored_budget(args.get("budget", {})).items()]
    options = TrainingOptions.parse(args.get("options", {})).given()
    argv += [_opt(name, value) for name, value in options.items() if name != "nproc"]
    processes = job_nproc(args, nproc)
    if processes > 1:
        argv.append(_opt("nproc", processes))
    # Nothing after "--" is an option; the positional model kind is pinned rather than defaulted.
    return [*argv, "--", "charrnn"]


def _opt(name: str, value: str | int | float | bool) -> str:
    """One option as a single argv word: ``--name=value``, or ``--flag`` / ``--no-flag`` for a bool."""
    if isinstance(value, bool):
        return flag(name) if value else "--no-" + flag(name)[2:]
    return f"{flag(name)}={value}"


def _path(value: Any, what: str) -> str:
    """A stored path as text (one argv word even if it starts with dashes: ``--corpus=…`` keeps it a value)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidRequest(f"job argument {what} is not a path: {value!r}")
    return value


def _stored_budget(budget: Any) -> dict[str, int | float]:
    """A job's stored budget, re-checked: known names, numbers only."""
    if not isinstance(budget, dict) or not set(budget) <= set(BUDGETS):
        raise InvalidRequest(f"job argument budget is malformed: {budget!r}")
    for name, value in budget.items():
        ok = _is_int(value) or (name != "steps" and isinstance(value, float) and math.isfinite(value))
        if not ok:
            raise InvalidRequest(f"job argument budget {name} is not a number: {value!r}")
    return dict(budget)

"""What a retrain job is asked to do, checked before anything is queued, and the trainer command it becomes.

A ``RetrainRequest`` is what an admin types (``genbot retrain MODEL --corpus NAME …``) or what a
schedule stores. ``check`` rejects nonsense up front (a bad budget, hyperparameters the trainer
would refuse, architecture options on a fine-tune) so nothing is queued that can only fail.
``train_argv`` turns a queued job's stored arguments into the ``genbot train`` command line the
worker runs in a child process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genbot.errors import InvalidRequest

# Options passed straight to `genbot train` (CLI spelling with underscores → --dashes).
HYPERPARAMETERS = (
    "cell", "layers", "hidden", "emb", "dropout", "block", "batch", "lr", "warmup", "weight_decay",
    "grad_clip", "carry_state", "bf16", "device", "eval_every", "seed", "save_dtype",
)  # fmt: skip
# Options that set the architecture: only meaningful when training from scratch.
ARCHITECTURE = ("cell", "layers", "hidden", "emb")
BUDGETS = ("steps", "epochs", "seconds")
# Upper bounds that catch typos (a budget of 10^9 steps is a mistake, not a plan).
BUDGET_LIMITS = {"steps": 10_000_000, "epochs": 100_000.0, "seconds": 30 * 86_400.0}
# TrainConfig field names where the CLI option is spelled differently.
_CONFIG_NAMES = {"emb": "embedding"}


@dataclass(frozen=True, kw_only=True)
class RetrainRequest:
    """A retrain as asked for: model, corpus, starting point, budget and hyperparameters."""

    model: str
    corpus: str  # a registered corpus name
    source: str = "active"  # active | scratch | a version number
    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None
    options: dict[str, Any] = field(default_factory=dict)  # HYPERPARAMETERS that were given
    max_attempts: int | None = None  # None: [jobs] max_attempts

    def budget(self) -> dict[str, float | int]:
        """The one budget that was given, as {name: value}."""
        return {name: getattr(self, name) for name in BUDGETS if getattr(self, name) is not None}

    def to_args(self) -> dict[str, Any]:
        """The request as plain JSON data (what a schedule stores)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k not in ("model", "corpus")}

    @classmethod
    def from_args(cls, model: str, corpus: str, args: dict[str, Any]) -> RetrainRequest:
        """The request a schedule stored with ``to_args``."""
        return cls(model=model, corpus=corpus, **args)


def parse_source(source: str) -> int | None:
    """``active`` / ``scratch`` → None, a version number → int; anything else is refused."""
    if source in ("active", "scratch"):
        return None
    if source.isdigit() and int(source) >= 1:
        return int(source)
    raise InvalidRequest(f"--from must be 'active', 'scratch' or a version number, got {source!r}")


def check(request: RetrainRequest) -> None:
    """Refuse a request the trainer could not run; raises InvalidRequest naming the option."""
    parse_source(request.source)
    _check_budget(request)
    unknown = sorted(set(request.options) - set(HYPERPARAMETERS))
    if unknown:
        raise InvalidRequest(f"unknown training option(s): {', '.join(unknown)}")
    arch = [name for name in ARCHITECTURE if name in request.options]
    if arch and request.source != "scratch":
        flags = ", ".join(f"--{name}" for name in arch)
        raise InvalidRequest(f"{flags}: a fine-tune keeps its parent's architecture; use --from scratch to change it")
    if request.max_attempts is not None and not 1 <= request.max_attempts <= 100:
        raise InvalidRequest("--max-attempts must be between 1 and 100")
    _check_hyperparameters(request)


def _check_budget(request: RetrainRequest) -> None:
    """Exactly one positive, finite budget below its limit."""
    budget = request.budget()
    if len(budget) != 1:
        raise InvalidRequest("give exactly one budget: --steps, --epochs or --seconds")
    (name, value), = budget.items()  # fmt: skip
    if not 0 < value <= BUDGET_LIMITS[name]:
        raise InvalidRequest(f"--{name} must be above 0 and at most {BUDGET_LIMITS[name]:g}, got {value}")


def _check_hyperparameters(request: RetrainRequest) -> None:
    """Let the trainer's own validation judge the options (same messages as ``genbot train``)."""
    from genbot.training.trainer import TrainConfig  # imports torch: only when checking

    values: dict[str, Any] = {_CONFIG_NAMES.get(k, k): v for k, v in request.options.items()}
    try:
        config = TrainConfig(**values | request.budget())
    except TypeError as e:
        raise InvalidRequest(f"bad training option: {e}") from None
    config.validate()
    if config.device not in ("cpu", "cuda"):
        raise InvalidRequest("--device must be cpu or cuda")


def train_argv(args: dict[str, Any], *, model: str, out: Path, threads: int) -> list[str]:
    """The ``genbot train`` arguments for a job's stored ``args`` (resumable, JSON progress)."""
    argv = ["train", "--corpus", args["corpus_path"], "--out", str(out), "--name", model]
    argv += ["--json", "--resume", "--threads", str(threads)]
    if args.get("parent_path"):
        argv += ["--from", args["parent_path"]]
    for name, value in {**args.get("budget", {}), **args.get("options", {})}.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, str(value)]
    return argv

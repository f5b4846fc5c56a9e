"""The one schema of training options: every hyperparameter a retrain may set, typed, closed and bounded.

``TrainingOptions`` is what the admin CLI (``genbot retrain``), the HTTP API (``options`` of
``POST /v1/admin/jobs``), Discord's ``/admin retrain`` and stored schedules accept, and what
``genbot train`` checks its own options against. It is strict on purpose: ``"3"`` is not an int,
``null`` is not a float, ``true`` is not a number, an unknown name is an error. An option that is
left out takes the trainer's default. Whatever passes can only become ``--name=value`` on the
training child's command line (see ``genbot.jobs.spec.train_argv``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema

from genbot.errors import InvalidRequest
from genbot.training.launch import MAX_NPROC

MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds
MAX_WARMUP = 10_000_000
# Options that set the architecture: only meaningful when training from scratch.
ARCHITECTURE = ("cell", "layers", "hidden", "emb")

MAX_EVAL_EVERY = 10_000_000
# The trainer's defaults for the two options whose product [jobs] max_batch_chars caps.
DEFAULT_BATCH = 64
DEFAULT_BLOCK = 100
# Every field is optional (None: not given, the trainer's default applies); SkipJsonSchema keeps
# "null" out of the published schema because an explicit null is refused (see _no_nulls).
_unset = SkipJsonSchema[None]


class TrainingOptions(BaseModel):
    """Hyperparameters of a training run, as ``genbot train`` names them (leave one out for its default)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cell: Literal["rnn", "lstm", "gru"] | _unset = Field(None, description="Recurrent cell (from scratch only).")
    layers: Annotated[int, Field(ge=1, le=16)] | _unset = Field(
        None, description="Stacked recurrent layers (from scratch only)."
    )
    hidden: Annotated[int, Field(ge=1, le=8192)] | _unset = Field(
        None, description="Units per layer (from scratch only)."
    )
    emb: Annotated[int, Field(ge=1, le=8192)] | _unset = Field(
        None, description="Character embedding size (from scratch only)."
    )
    dropout: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] | _unset = Field(
        None, description="Dropout between layers and before the head."
    )
    block: Annotated[int, Field(ge=1, le=100_000)] | _unset = Field(
        None, description="Truncated-BPTT window, in characters."
    )
    batch: Annotated[int, Field(ge=1, le=100_000)] | _unset = Field(
        None, description="Windows per step (batch x block is capped by [jobs] max_batch_chars)."
    )
    lr: Annotated[float, Field(gt=0.0, lt=10.0, allow_inf_nan=False)] | _unset = Field(
        None, description="Peak learning rate."
    )
    warmup: Annotated[int, Field(ge=0, le=MAX_WARMUP)] | _unset = Field(None, description="Linear warmup steps.")
    weight_decay: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False)] | _unset = Field(
        None, description="AdamW decoupled weight decay."
    )
    grad_clip: Annotated[float, Field(gt=0.0, le=1e6, allow_inf_nan=False)] | _unset = Field(
        None, description="Max global gradient norm."
    )
    carry_state: bool | _unset = Field(None, description="Carry hidden state across consecutive windows.")
    bf16: bool | _unset = Field(None, description="bfloat16 autocast for the forward pass.")
    device: Literal["cpu", "cuda"] | _unset = Field(None, description="Where to train.")
    eval_every: Annotated[int, Field(ge=1, le=MAX_EVAL_EVERY)] | _unset = Field(
        None, description="Steps between evaluations and checkpoints."
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | _unset = Field(
        None, description="Seed of initialisation, batches and dropout."
    )
    save_dtype: Literal["float32", "float16", "bfloat16"] | _unset = Field(
        None, description="Dtype of the stored weights."
    )
    nproc: Annotated[int, Field(ge=1, le=MAX_NPROC)] | _unset = Field(
        None, description="Training processes (DistributedDataParallel ranks) on one machine; --batch is per process."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        """An explicit null is refused: leaving the option out is how its default is asked for."""
        if value is None:
            raise ValueError("null is not a value; leave the option out for its default")
        return value

    def given(self) -> dict[str, Any]:
        """The options that were set, as plain JSON data."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def parse(cls, data: Any) -> TrainingOptions:
        """Validate ``data`` (a mapping, e.g. read back from the database); InvalidRequest names the option."""
        if isinstance(data, TrainingOptions):
            return data
        if not isinstance(data, dict):
            raise InvalidRequest(f"training options must be a mapping of names to values, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidRequest(describe(e)) from None


def flag(name: str) -> str:
    """The command-line spelling of an option: ``grad_clip`` → ``--grad-clip``."""
    return "--" + name.replace("_", "-")


def describe(error: ValidationError) -> str:
    """The first problem of a validation error, naming the option as the CLI spells it."""
    # A field's None branch (the "not given" default) reports its own mismatch: not the user's problem.
    problems = [p for p in error.errors() if p.get("type") != "none_required"] or error.errors()
    first = problems[0]
    loc = [str(part) for part in first.get("loc", ())]
    name = loc[0] if loc else ""
    if first.get("type") == "extra_forbidden":
        message = f"unknown training option {name!r}"
    elif not name:
        message = f"bad training options: {first.get('msg', 'invalid')}"
    else:
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        got = "" if first.get("input") is None else f" (got {_short(first.get('input'))})"
        message = f"{flag(name)}: {msg[:1].lower()}{msg[1:]}{got}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    return message


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

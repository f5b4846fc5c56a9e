"""What a preset may hold and be called, and whose it is.

A preset's parameters are a strict schema (``PresetParams``): unknown fields, wrong types and
values outside the limits every request must respect are refused on the way in, and re-checked
on the way out, so a row edited behind genbot's back cannot smuggle anything into a request.
Names are short and plain (letters, digits, ``_ . -``, starting with a letter or digit); names
starting with ``_`` are reserved for genbot's own rows, such as the REPL's last used settings
(``LAST_USED``), so a user can neither make nor overwrite them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genbot.errors import InvalidRequest

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LAST_USED = "_last"  # the REPL's settings when it last ran, per local user (never listed)
GLOBAL = "*"  # owner_frontend and owner_key of a global preset (made by admins, used by everyone)
MAX_STOPS = 8
MAX_STOP_CHARS = 100
MAX_PRESETS_PER_OWNER = 100


class PresetParams(BaseModel):
    """The settings a preset stores; every field is optional (unset: the model's and bot.toml's default)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    temperature: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    length: int | None = Field(None, ge=1, le=1_000_000)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOPS)
    seed_policy: Literal["random", "fixed"] = "random"
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _check(self) -> PresetParams:
        if self.seed_policy == "fixed" and self.seed is None:
            raise ValueError("seed_policy 'fixed' needs a seed")
        if self.seed_policy == "random" and self.seed is not None:
            raise ValueError("a seed is kept only with seed_policy 'fixed'")
        for stop in self.stop:
            if not 1 <= len(stop) <= MAX_STOP_CHARS or "\x00" in stop or not _is_unicode(stop):
                raise ValueError(f"each stop string needs 1 to {MAX_STOP_CHARS} characters of valid Unicode, no NUL")
        return self

    def summary(self) -> str:
        """One line for lists: the settings that are set."""
        shown = self.model_dump(exclude_defaults=True)
        return ", ".join(f"{k}={v!r}" for k, v in shown.items()) or "(all defaults)"


def _is_unicode(text: str) -> bool:
    """Whether ``text`` can be stored (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_params(data: object, where: str = "preset") -> PresetParams:
    """``data`` (a JSON object) as preset parameters, or InvalidRequest naming the first problem."""
    if isinstance(data, PresetParams):
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"{where}: parameters must be an object")
    try:
        # JSON floats written as whole numbers ("temperature": 1) are still numbers.
        fixed = {k: float(v) if k in ("temperature", "top_p") and type(v) is int else v for k, v in data.items()}
        return PresetParams.model_validate(fixed)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "params"
        raise InvalidRequest(f"{where}: {field}: {err['msg']}") from None


def settings_params(
    *,
    model: str | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    length: int | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
) -> dict[str, object]:
    """Settings as the front ends take them, as preset parameters for ``parse_params`` (a seed: the fixed policy)."""
    return {
        "model": model, "temperature": temperature, "top_k": top_k, "top_p": top_p, "length": length,
        "stop": list(stop), "seed_policy": "random" if seed is None else "fixed", "seed": seed,
    }  # fmt: skip


def check_name(name: str, *, reserved_ok: bool = False) -> str:
    """``name`` if it is a valid preset name, else InvalidRequest."""
    if reserved_ok and name == LAST_USED:
        return name
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = name[:40] + "…" if isinstance(name, str) and len(name) > 40 else name
        raise InvalidRequest(
            f"preset name {shown!r}: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class PresetOwner:
    """Whose presets: a front end and its user key (API key id, Discord user id, local user), or global."""

    frontend: str
    key: str

    @property
    def is_global(self) -> bool:
        """A preset every user may load."""
        return self.frontend == GLOBAL


GLOBAL_OWNER = PresetOwner(GLOBAL, GLOBAL)

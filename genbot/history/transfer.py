"""Reading a JSON-lines export back in (``genbot history import FILE``).

Every line is checked before anything is written, and the whole file is stored in one
transaction, so a bad line anywhere writes nothing. Who a row belongs to is never read from the
file: ``id``, ``user_id``, ``api_key_id``, ``guild_id``, ``channel_id`` and the writing process
come from the import itself, so a file cannot place rows in someone else's history. A row that
is already there (same owner, time, model, prompt and output) is skipped, so importing the same
file twice stores it once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from genbot.errors import InvalidRequest

MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_TEXT_CHARS = 1_000_000  # a prompt or an output; far above what a generation can store
MAX_NAME_CHARS = 100
FINAL_STATUSES = ("completed", "cancelled", "failed")
INTERRUPTED = "interrupted: the generation was still running when it was exported"
_BIGINT = 2**63


@dataclass(frozen=True)
class ImportedGeneration:
    """One checked line of an export: the fields a stored generation keeps, owner left out."""

    created_at: datetime
    finished_at: datetime | None
    model: str
    model_version: str | None
    prompt: str
    output: str
    temperature: float
    top_k: int | None
    top_p: float | None
    max_length: int
    seed: int | None
    stop: tuple[str, ...]
    chars: int
    time_to_first_char_ms: float | None
    duration_ms: float | None
    status: str
    error: str | None
    frontend: str
    source_id: int | None = None  # the id in the exporting database: only orders the rows, never stored


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows stored, and rows skipped because they were already there."""

    imported: int
    duplicates: int


def parse_export(data: bytes) -> list[ImportedGeneration]:
    """The generations of a JSON-lines export; InvalidRequest naming the first bad line."""
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidRequest(f"the file is {len(data):,} bytes; an import may be at most {MAX_IMPORT_BYTES:,}")
    if b"\x00" in data:
        raise InvalidRequest("the file is not a genbot export: it holds binary data (NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"the file is not UTF-8 text (byte {e.start}); expected JSON lines") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_record(_object(line)))
        except InvalidRequest as e:
            raise InvalidRequest(f"line {number}: {e}") from None
    return records


def _object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        raise InvalidRequest("not valid JSON (an export has one JSON object per line)") from None
    if not isinstance(value, dict):
        raise InvalidRequest("not a JSON object")
    return value


def _record(item: dict[str, Any]) -> ImportedGeneration:
    created = _time(item, "created_at", required=True)
    assert created is not None
    status = _text(item, "status", 16, default="completed")
    error = _text(item, "error", MAX_TEXT_CHARS, optional=True)
    if status == "running":  # exported while it ran: it never finished here
        status, error = "failed", INTERRUPTED
    if status not in FINAL_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}")
    output = _text(item, "output", MAX_TEXT_CHARS, default="")
    stop = item.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and _storable(s) for s in stop) or len(stop) > 64:
        raise InvalidRequest("stop must be a list of at most 64 strings")
    version = item.get("model_version")
    return ImportedGeneration(
        created_at=created,
        finished_at=_time(item, "finished_at"),
        model=_text(item, "model", MAX_NAME_CHARS, required=True),
        model_version=None if version is None else _text({"v": str(version)}, "v", 64),
        prompt=_text(item, "prompt", MAX_TEXT_CHARS, default=""),
        output=output,
        temperature=_number(item, "temperature", default=0.0),
        top_k=_integer(item, "top_k", optional=True),
        top_p=_number(item, "top_p", optional=True),
        max_length=_integer(item, "max_length", default=len(output)),
        seed=_integer(item, "seed", optional=True),
        stop=tuple(stop),
        chars=_integer(item, "chars", default=len(output)),
        time_to_first_char_ms=_number(item, "time_to_first_char_ms", optional=True),
        duration_ms=_number(item, "duration_ms", optional=True),
        status=status,
        error=error,
        frontend=_text(item, "frontend", 16, default="import"),
        source_id=item["id"] if isinstance(item.get("id"), int) and not isinstance(item.get("id"), bool) else None,
    )


def _storable(value: str) -> bool:
    """Text every database keeps: no NUL (PostgreSQL refuses it), no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _text(item: dict[str, Any], name: str, limit: int, *, required: bool = False, optional: bool = False,
          default: str = "") -> Any:  # fmt: skip
    value = item.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is missing")
        return None if optional else default
    if not isinstance(value, str) or not _storable(value):
        raise InvalidRequest(f"{name} must be text")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is longer than {limit:,} characters")
    return value


def _time(item: dict[str, Any], name: str, *, required: bool = False) -> datetime | None:
    value = item.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is missing")
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidRequest(f"{name} must be an ISO time with its UTC offset, got {value!r:.60}")
    return parsed


def _number(item: dict[str, Any], name: str, *, default: float = 0.0, optional: bool = False) -> Any:
    value = item.get(name)
    if value is None:
        return None if optional else default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a finite number")
    if not -1e12 < value < 1e12:
        raise InvalidRequest(f"{name} is out of range")
    return float(value)


def _integer(item: dict[str, Any], name: str, *, default: int = 0, optional: bool = False) -> Any:
    value = item.get(name)
    if value is None:
        return None if optional else default
    if isinstance(value, bool) or not isinstance(value, int) or not -_BIGINT <= value < _BIGINT:
        raise InvalidRequest(f"{name} must be a whole number")
    if name != "seed" and not -(2**31) <= value < 2**31:
        raise InvalidRequest(f"{name} is out of range")
    return value

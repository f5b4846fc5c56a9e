"""Stored generations rendered as JSON, JSON lines, CSV or Markdown (``genbot history --format``).

Each renderer takes rows one at a time and yields text, so an export of a long history is
written as it is read. JSON lines is the format ``genbot history import`` reads back.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

FORMATS = ("json", "jsonl", "csv", "markdown")
FIELDS = (
    "id", "parent_id", "created_at", "finished_at", "model", "model_version", "prompt", "output", "temperature",
    "top_k", "top_p", "max_length", "seed", "stop", "chars", "time_to_first_char_ms", "duration_ms", "status", "error",
    "frontend", "user_id", "guild_id", "channel_id", "api_key_id",
)  # fmt: skip


def row_data(row: Any) -> dict[str, Any]:
    """One stored generation as plain JSON data: times as ISO strings, the stop strings as a list."""
    data = asdict(row)
    out = {name: data[name] for name in FIELDS}
    for name in ("created_at", "finished_at"):
        value = out[name]
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    out["stop"] = list(out["stop"])
    out["status"] = str(out["status"])
    return out


def render(rows: Iterable[Any], fmt: str) -> Iterator[str]:
    """The rows in ``fmt`` (one of ``FORMATS``), as pieces of text to write one after another."""
    yield head(fmt)
    for index, row in enumerate(rows):
        yield piece(fmt, row, index)
    yield tail(fmt)


def head(fmt: str) -> str:
    """What comes before the first row (ValueError for an unknown format)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return {"json": "[", "jsonl": "", "csv": _csv_line(list(FIELDS)), "markdown": "# genbot history\n"}[fmt]


def piece(fmt: str, row: Any, index: int) -> str:
    """One row (the ``index``-th, from 0) in ``fmt``."""
    data = row_data(row)
    if fmt == "jsonl":
        return json.dumps(data, ensure_ascii=False) + "\n"
    if fmt == "json":
        return ("," if index else "") + "\n  " + json.dumps(data, ensure_ascii=False)
    if fmt == "csv":
        data["stop"] = json.dumps(data["stop"], ensure_ascii=False)  # a list in one cell
        return _csv_line(["" if data[name] is None else data[name] for name in FIELDS])
    who = "/".join(str(data[k]) for k in ("frontend", "user_id") if data[k] is not None)
    return (
        f"\n## #{data['id']} · {data['created_at']} · {data['model']} · {data['status']}\n\n"
        f"- by {who} · temperature {data['temperature']:g} · seed {data['seed']} · {data['chars']} chars\n\n"
        f"Prompt:\n\n{_fenced(data['prompt'])}\nOutput:\n\n{_fenced(data['output'])}"
    )


def tail(fmt: str) -> str:
    """What comes after the last row."""
    return "\n]\n" if fmt == "json" else ""


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _fenced(text: str) -> str:
    """``text`` in a code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}\n"

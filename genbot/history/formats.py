"""Stored generations rendered as JSON, JSON lines, CSV or Markdown (``genbot history --format``).

Each renderer takes rows one at a time and yields text, so an export of a long history is
written as it is read. JSON lines is the format ``genbot history import`` reads back.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

FORMATS = ("json", "jsonl", "csv", "markdown")
FIELDS = (
    "id", "created_at", "finished_at", "model", "model_version", "prompt", "output", "temperature", "top_k",
    "top_p", "max_length", "seed", "stop", "chars", "time_to_first_char_ms", "duration_ms", "status", "error",
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
    renderers: dict[str, Callable[[Iterable[Any]], Iterator[str]]] = {
        "json": _json,
        "jsonl": _jsonl,
        "csv": _csv,
        "markdown": _markdown,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return renderers[fmt](rows)


def _jsonl(rows: Iterable[Any]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row_data(row), ensure_ascii=False) + "\n"


def _json(rows: Iterable[Any]) -> Iterator[str]:
    yield "["
    for i, row in enumerate(rows):
        yield ("," if i else "") + "\n  " + json.dumps(row_data(row), ensure_ascii=False)
    yield "\n]\n"


def _csv(rows: Iterable[Any]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flushed(values: list[Any]) -> str:
        writer.writerow(values)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield flushed(list(FIELDS))
    for row in rows:
        data = row_data(row)
        data["stop"] = json.dumps(data["stop"], ensure_ascii=False)  # a list in one cell
        yield flushed(["" if data[name] is None else data[name] for name in FIELDS])


def _markdown(rows: Iterable[Any]) -> Iterator[str]:
    yield "# genbot history\n"
    for row in rows:
        data = row_data(row)
        who = "/".join(str(data[k]) for k in ("frontend", "user_id") if data[k] is not None)
        yield (
            f"\n## #{data['id']} · {data['created_at']} · {data['model']} · {data['status']}\n\n"
            f"- by {who} · temperature {data['temperature']:g} · seed {data['seed']} · {data['chars']} chars\n\n"
            f"Prompt:\n\n{_fenced(data['prompt'])}\nOutput:\n\n{_fenced(data['output'])}"
        )


def _fenced(text: str) -> str:
    """``text`` in a code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}\n"

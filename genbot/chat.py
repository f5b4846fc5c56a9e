"""Chat templates: a conversation rendered into the one text a char-RNN continues.

A generator's card may set ``chat_template``, the text of one message with two placeholders:
``{name}`` (who speaks) and ``{text}`` (what they say), e.g. ``"{name}:\\n{text}\\n\\n"`` for a
model trained on plays. Every message is rendered with it, in order; then the reply is opened —
the template up to ``{text}`` with the assistant's name — so the model writes the next speech.
The whole text is cut from the front to ``[sampling] context_chars``, keeping the newest turns.
``{{`` and ``}}`` are literal braces; any other ``{…}`` is refused when the card is read.

Names: a message's own ``name`` (OpenAI's field) if it has one, else its role in capitals
(``USER``, ``ASSISTANT``, ``SYSTEM``); the reply takes the name of the last assistant message,
else ``ASSISTANT``. The text is sent like any prompt: characters the model has never seen are
mapped to look-alikes or left out, and the response says which.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]")
NAMES = ("name", "text")
DEFAULT_REPLY_NAME = "ASSISTANT"


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: who speaks and what they say."""

    name: str
    text: str


def check_template(template: str) -> str:
    """``template`` if it has exactly one ``{text}``, at most one ``{name}``, and nothing else in braces."""
    counts = dict.fromkeys(NAMES, 0)
    for match in PLACEHOLDER.finditer(template):
        token = match.group()
        if token in ("{{", "}}"):
            continue
        key = token[1:-1]
        if key not in counts:
            hint = "use {name} and {text}, {{ and }} for braces"
            raise ValueError(f"chat_template: unknown placeholder {token!r} ({hint})")
        counts[key] += 1
    if counts["text"] != 1:
        raise ValueError("chat_template: needs {text} exactly once")
    if counts["name"] > 1:
        raise ValueError("chat_template: {name} at most once")
    return template


def _fill(template: str, values: dict[str, str]) -> str:
    """``template`` with its placeholders replaced (message text is never itself a template)."""
    return PLACEHOLDER.sub(lambda m: {"{{": "{", "}}": "}"}.get(m.group()) or values[m.group()[1:-1]], template)


def render(template: str, turns: Sequence[Turn], reply_name: str, limit: int) -> str:
    """The conversation in ``template``, then the opening of the reply, cut from the front to ``limit``."""
    head, _, _ = template.partition("{text}")
    body = "".join(_fill(template, {"name": t.name, "text": t.text}) for t in turns)
    text = body + _fill(head, {"name": reply_name})
    return text[-limit:] if limit > 0 else ""


def reply_stop(template: str) -> str:
    """What follows ``{text}`` in the template, up to any ``{name}``: where a reply ends (a stop string), or ""."""
    tail = template.partition("{text}")[2].split("{name}")[0]
    return _fill(tail, {})

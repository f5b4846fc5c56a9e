"""Per-character features a unit might track, as in "Visualizing and Understanding Recurrent Networks".

Each feature maps a text of T characters to T numbers: the value *after* reading each character,
the same convention as the activations (so an opening quote is already "inside"). Scanners are
small state machines, deliberately simple: they describe what a reader of the text would call
the state, not a full parser of C or LaTeX.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genbot.errors import InvalidRequest


def quotes(text: str) -> np.ndarray:
    """1 inside "…" (and inside '…' used as prose quotes, not apostrophes), else 0."""
    out = np.zeros(len(text), dtype=np.float64)
    double = single = False
    for t, ch in enumerate(text):
        if ch == '"' and not single:
            double = not double
        elif ch == "'" and not double:
            single = _single_quote(text, t, single)
        elif ch == "\n":
            single = False  # prose '…' quotes rarely span lines; this bounds a misread apostrophe
            double = double and not text.startswith("\n", t + 1)  # a paragraph break ends "…"
        out[t] = double or single
    return out


def _single_quote(text: str, t: int, inside: bool) -> bool:
    """Whether a ' at ``t`` leaves us inside a single-quoted span (apostrophes change nothing)."""
    before = text[t - 1] if t > 0 else " "
    after = text[t + 1] if t + 1 < len(text) else " "
    if not inside:
        return not before.isalnum() and after.isalpha()
    return not (before.isalnum() or before in ".,!?;:-") or after.isalnum()


def line_position(text: str) -> np.ndarray:
    """Characters since the last newline (0 at the newline itself)."""
    out = np.zeros(len(text), dtype=np.float64)
    col = 0
    for t, ch in enumerate(text):
        col = 0 if ch == "\n" else col + 1
        out[t] = col
    return out


def _c_states(text: str) -> list[str]:
    """State after each char of C-like text: code, string, char, line (comment) or block (comment)."""
    states: list[str] = []
    state, prev = "code", ""
    for ch in text:
        state, prev = _c_next(state, prev, ch)
        states.append(state)
    return states


def _c_next(state: str, prev: str, ch: str) -> tuple[str, str]:
    """One step of the C scanner; ``prev`` is the previous char, blanked after it is consumed."""
    if state == "code":
        if prev == "/" and ch in "/*":
            return ("line" if ch == "/" else "block"), ""
        if ch in "\"'":
            return ("string" if ch == '"' else "char"), ""
        return "code", ch
    if state in ("string", "char"):
        quote = '"' if state == "string" else "'"
        if prev == "\\":
            return state, ""
        return ("code", "") if ch == quote or ch == "\n" else (state, ch)
    if state == "line":
        return ("code", "") if ch == "\n" else ("line", ch)
    return ("code", "") if prev == "*" and ch == "/" else ("block", ch)


def comment(text: str) -> np.ndarray:
    """1 inside a C comment (/* … */ or // to the end of the line), else 0."""
    return np.array([s in ("line", "block") for s in _c_states(text)], dtype=np.float64)


def bracket_depth(text: str) -> np.ndarray:
    """Nesting depth of { } and ( ) outside comments and string literals (never below 0)."""
    out = np.zeros(len(text), dtype=np.float64)
    depth = 0
    for t, (ch, state) in enumerate(zip(text, _c_states(text), strict=True)):
        if state == "code":
            depth = depth + 1 if ch in "{(" else max(0, depth - 1) if ch in "})" else depth
        out[t] = depth
    return out


def math_mode(text: str) -> np.ndarray:
    """1 inside LaTeX math: $…$, $$…$$, \\(…\\) or \\[…\\] (escaped \\$ is text), else 0."""
    out = np.zeros(len(text), dtype=np.float64)
    inside = False
    t = 0
    while t < len(text):
        ch, before = text[t], text[t - 1] if t > 0 else ""
        if ch == "$" and before != "\\":
            width = 2 if text[t : t + 2] == "$$" else 1
            inside = not inside
            out[t : t + width] = 1.0  # the delimiter itself counts as math
            t += width
            continue
        if before == "\\" and ch in "([":
            inside = True
        elif before == "\\" and ch in ")]":
            inside = False
        out[t] = inside
        t += 1
    return out


def env_depth(text: str) -> np.ndarray:
    """Depth of LaTeX \\begin{…} … \\end{…} environments, changed when the brace name closes."""
    out = np.zeros(len(text), dtype=np.float64)
    depth, pending = 0, 0
    for t, ch in enumerate(text):
        if text.startswith("\\begin{", t):
            pending = 1
        elif text.startswith("\\end{", t):
            pending = -1
        elif ch == "}" and pending:
            depth, pending = max(0, depth + pending), 0
        out[t] = depth
    return out


FEATURES: dict[str, Callable[[str], np.ndarray]] = {
    "quotes": quotes,
    "line-position": line_position,
    "bracket-depth": bracket_depth,
    "comment": comment,
    "math": math_mode,
    "env-depth": env_depth,
}


def feature_signal(name: str, text: str) -> np.ndarray:
    """The named feature over ``text``; InvalidRequest for an unknown name."""
    if name not in FEATURES:
        raise InvalidRequest(f"unknown feature {name!r} (known: {', '.join(FEATURES)})")
    return FEATURES[name](text)

"""The rule for new model names (``genbot models add``, ``train --register``, ``retrain --from scratch``).

Plain rules, no database or torch: front ends may check a name before any work starts.
"""

from __future__ import annotations

import re

from genbot.errors import InvalidRequest

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_model_name(name: str) -> str:
    """``name`` if it may name a new model; InvalidRequest saying what is allowed otherwise."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"invalid model name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name

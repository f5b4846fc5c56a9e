"""Checks on text fields every database can store (no lone surrogates, no NUL)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def storable(value: str) -> str:
    """``value`` if it is valid Unicode without NUL (PostgreSQL text refuses NUL; UTF-8 refuses surrogates)."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from e
    return value


Text = Annotated[str, AfterValidator(storable)]

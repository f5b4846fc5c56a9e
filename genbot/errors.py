"""Every error genbot raises on purpose, as one tree.

Only front ends translate these: the CLI prints the message and exits non-zero, the HTTP API
answers 4xx/503 with a JSON body, the Discord bot replies ephemerally. Anything else that
escapes is a bug.

    GenbotError
    ├── ConfigError          bad or unknown configuration
    ├── InvalidRequest       a caller's parameters make no sense (length, temperature, …)
    │   ├── UnknownModel     no loaded generator by that name
    │   ├── ImageError       an image that is not an image, truncated, a decompression bomb or too large
    │   └── QuotaExceeded    a user/guild/key is over its quota or cooling down; ``retry_after`` s
    ├── CorpusError          empty, binary, non-UTF-8 or too-short training text
    ├── CheckpointError      a model folder is corrupt, mismatched or unreadable
    ├── PluginLoadError      a plugin could not be loaded (it is skipped, the rest run)
    ├── Busy                 too many streams queued; retry after ``retry_after`` seconds
    └── NotFound             a stored thing (generation, job, version) does not exist
"""

from __future__ import annotations


class GenbotError(Exception):
    """Base of every error genbot raises deliberately."""


class ConfigError(GenbotError):
    """The configuration file or environment is invalid."""


class InvalidRequest(GenbotError):
    """A request's parameters are out of range or malformed."""


class UnknownModel(InvalidRequest):
    """The named generator is not loaded."""

    def __init__(self, name: str, available: list[str] | None = None) -> None:
        known = ", ".join(sorted(available or [])) or "none"
        super().__init__(f"unknown model {name!r} (available: {known})")
        self.name = name


class ImageError(InvalidRequest):
    """An image cannot be read safely: not an image, truncated, a decompression bomb or too large."""


class QuotaExceeded(InvalidRequest):
    """A subject (user, guild, API key) is over its quota or in its cooldown."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CorpusError(GenbotError):
    """A training corpus cannot be used."""


class CheckpointError(GenbotError):
    """A model folder cannot be loaded or written."""


class PluginLoadError(GenbotError):
    """A plugin failed to load; it is skipped and reported."""


class Busy(GenbotError):
    """The engine is at capacity; the caller should retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(GenbotError):
    """A stored record does not exist."""

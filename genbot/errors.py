"""Every error genbot raises on purpose, as one tree, and what each front end makes of it.

Only front ends translate these, all from the one table below (``TABLE``, read through
``describe``): the CLI prints ``error: <message>`` and exits with the code, the HTTP API answers
the status with a JSON body of that type (and ``Retry-After`` for a ``RetryLater``), the Discord
bot replies ephemerally with the wording. Anything else that escapes is a bug.

    class                       HTTP  API error type          Discord wording            CLI exit
    GenbotError                 400   invalid_request_error   the message                2
    ├── ConfigError             500   server_error            the message                2
    ├── InvalidRequest          400   invalid_request_error   the message                2
    │   ├── UnknownModel        404   model_not_found         the message                2
    │   └── ImageError          400   invalid_request_error   the message                2
    ├── CorpusError             400   invalid_request_error   the message                2
    ├── CheckpointError         400   invalid_request_error   the message                2
    ├── PluginLoadError         400   invalid_request_error   the message                1
    ├── NotFound                404   not_found               the message                2
    ├── LeaseLost               409   lease_lost              the message                1
    └── RetryLater              503   server_busy             the message                1
        ├── Busy                503   server_busy             the message                1
        └── QuotaExceeded       429   quota_exceeded          the message + "try again"  1

The CLI's exit status: 2 for a usage error (what the caller gave is wrong: arguments, files,
names, configuration; Typer's own usage errors exit 2 too), 1 for a runtime failure (the request
was fine but could not be done now: busy, over quota, a lost lease, a plugin that failed).

* ``ConfigError`` — bad or unknown configuration (the API logs it: it is the operator's to fix).
* ``InvalidRequest`` — a caller's parameters make no sense (length, temperature, …);
  ``UnknownModel``: no loaded generator by that name; ``ImageError``: not an image, truncated,
  a decompression bomb or too large.
* ``CorpusError`` — empty, binary, non-UTF-8 or too-short training text.
* ``CheckpointError`` — a model folder is corrupt, mismatched or unreadable.
* ``PluginLoadError`` — a plugin could not be loaded (it is skipped, the rest run).
* ``NotFound`` — a stored thing (generation, job, corpus, version, key) does not exist.
* ``LeaseLost`` — a worker's job lease was taken over by another worker; it must stop.
* ``RetryLater`` — try again after ``retry_after`` seconds: ``Busy``, too many streams queued;
  ``QuotaExceeded``, a user/guild/key is over its quota or cooling down (Discord adds a relative
  "try again <time>").
"""

from __future__ import annotations

from dataclasses import dataclass


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


class CorpusError(GenbotError):
    """A training corpus cannot be used."""


class CheckpointError(GenbotError):
    """A model folder cannot be loaded or written."""


class PluginLoadError(GenbotError):
    """A plugin failed to load; it is skipped and reported."""


class NotFound(GenbotError):
    """A stored record does not exist."""


class LeaseLost(GenbotError):
    """This worker no longer holds the job's lease (it expired and another worker took it)."""


class RetryLater(GenbotError):
    """The request may succeed later: ``retry_after`` seconds from now."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(RetryLater):
    """The engine is at capacity; the caller should retry later."""


class QuotaExceeded(RetryLater):
    """A subject (user, guild, API key) is over its quota or in its cooldown."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after)


@dataclass(frozen=True)
class Translation:
    """What the front ends make of one error class."""

    http_status: int
    api_type: str
    discord_retry_hint: bool = False  # Discord adds "(try again <relative time>)" to the message
    exit_code: int = 2  # the CLI's: 2 usage error, 1 runtime failure


TABLE: dict[type[GenbotError], Translation] = {
    GenbotError: Translation(400, "invalid_request_error"),
    ConfigError: Translation(500, "server_error"),
    InvalidRequest: Translation(400, "invalid_request_error"),
    UnknownModel: Translation(404, "model_not_found"),
    ImageError: Translation(400, "invalid_request_error"),
    CorpusError: Translation(400, "invalid_request_error"),
    CheckpointError: Translation(400, "invalid_request_error"),
    PluginLoadError: Translation(400, "invalid_request_error", exit_code=1),
    NotFound: Translation(404, "not_found"),
    LeaseLost: Translation(409, "lease_lost", exit_code=1),
    RetryLater: Translation(503, "server_busy", exit_code=1),
    Busy: Translation(503, "server_busy", exit_code=1),
    QuotaExceeded: Translation(429, "quota_exceeded", discord_retry_hint=True, exit_code=1),
}


def describe(error: GenbotError) -> Translation:
    """The table row of the most specific class ``error`` is an instance of (its own class first)."""
    for cls in type(error).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return TABLE[GenbotError]

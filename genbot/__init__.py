"""genbot: a plugin-based character-level RNN text-generation bot and HTTP API."""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    """The installed distribution's version: pyproject.toml is its one source."""
    try:
        return version("genbot")
    except PackageNotFoundError:  # imported from a bare source tree that was never installed
        return "0+unknown"


__version__ = _version()

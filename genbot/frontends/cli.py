"""The ``genbot`` command line: training, evaluation, sampling and admin commands.

Errors from genbot's own tree become one ``error: …`` line on stderr and exit status 2;
anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from genbot.errors import GenbotError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="genbot: char-RNN text generation bot.",
)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn genbot errors into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenbotError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point."""
    # Importing these modules registers their commands.
    from genbot.frontends import (  # noqa: F401
        commands_api,
        commands_caption,
        commands_corpus,
        commands_discord,
        commands_inspect,
        commands_jobs,
        commands_models,
        commands_serve,
        commands_serving,
    )

    app()


def emit_json(obj: Any) -> None:
    """One JSON object per line on stdout, flushed so pipes see it at once."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


PathArg = Annotated[Path, typer.Option(help="a path")]

"""A plugin whose hooks raise: genbot must skip it with the reason and load everything else."""

from __future__ import annotations

from typing import Any

from genbot.hookspecs import hookimpl


@hookimpl
def register_routes(app: Any) -> None:
    """Fails."""
    raise RuntimeError("the demo route plugin is broken")


@hookimpl
def register_commands(cli: Any) -> None:
    """Fails too (the CLI calls this hook in its own process)."""
    raise RuntimeError("the demo command plugin is broken")

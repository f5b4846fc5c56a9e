"""The whole plugin surface: every hook genbot calls, one line each.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names and arguments
match the specs below; it may implement any subset. Third-party packages list the module under
``[project.entry-points.genbot]``; a bundled folder may hold a ``plugin.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotations only: loading plugins must not import every front end (and torch)
    import typer
    from discord.ext.commands import Cog
    from fastapi import FastAPI

    from genbot.networks.checkpoint import LoadedGenerator

hookspec = pluggy.HookspecMarker("genbot")
hookimpl = pluggy.HookimplMarker("genbot")


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator a plugin offers: its model folder and, optionally, how to load it."""

    folder: Path  # holds plugin.toml (+ weights, vocab) for this generator
    loader: Callable[[Path], LoadedGenerator] | None = None  # None: the standard CharRNN folder loader


@hookspec
def register_generators(register: Callable[[GeneratorSpec | Path], None]) -> None:
    """Offer generators: call ``register(folder)`` or ``register(GeneratorSpec(...))`` for each."""


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add admin commands to the ``genbot`` CLI."""


@hookspec
def register_cogs(register: Callable[[type[Cog]], None]) -> None:
    """Add Discord features: call ``register(cog_class)`` for each Cog subclass."""


@hookspec
def register_routes(app: FastAPI) -> None:
    """Add HTTP endpoints to the API app."""

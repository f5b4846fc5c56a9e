"""Where the files that ship with genbot are: the bundled plugins and the Alembic migrations.

The repository keeps them at its top level (``plugins/``, ``migrations/``). A built wheel carries
copies inside the package (``genbot/_bundled/plugins``, ``genbot/_bundled/migrations``; see
``setup.py``), found through :mod:`importlib.resources`. A checkout or an editable install has no
copies and uses the top-level folders next to the package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import genbot

BUNDLED_PACKAGE_DIR = "_bundled"
SHIPPED = ("plugins", "migrations")


def shipped_dir(name: str) -> Path:
    """The folder ``name`` (``plugins`` or ``migrations``): the wheel's copy, else the checkout's."""
    if name not in SHIPPED:
        raise ValueError(f"genbot ships no folder called {name!r}")
    inside = files(genbot).joinpath(BUNDLED_PACKAGE_DIR, name)
    if isinstance(inside, Path) and inside.is_dir():
        return inside.resolve()
    return Path(genbot.__file__).resolve().parent.parent / name


def bundled_plugins_dir() -> Path:
    """The bundled generator plugins."""
    return shipped_dir("plugins")


def migrations_dir() -> Path:
    """The Alembic environment and its versions."""
    return shipped_dir("migrations")

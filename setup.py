"""Build hook: copy the top-level ``plugins/`` and ``migrations/`` into the wheel.

The repository layout keeps both folders at the top level; an installed genbot finds its copies
under ``genbot/_bundled/`` (see ``genbot/resources.py``). Editable installs copy nothing: they
use the folders of the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("plugins", "migrations")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "checkpoint")


class BuildWithBundled(build_py):
    """``build_py`` that also copies the shipped folders into ``genbot/_bundled``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "genbot" / "_bundled"
        for name in SHIPPED:
            source = ROOT / name
            if not source.is_dir():
                raise SystemExit(f"cannot build genbot: the {name}/ folder is missing")
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(source, target / name, ignore=JUNK)


setup(cmdclass={"build_py": BuildWithBundled})

"""Bundled image captioner: registers this folder with the captioner loader (CNN encoder + LSTM decoder)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from genbot.hookspecs import GeneratorSpec, hookimpl


def load_captioner(folder: Path) -> Any:
    """The captioner in ``folder`` (torch loads only when a generator is built, not when plugins are listed)."""
    from genbot.networks.captioner_checkpoint import load_captioner as load

    return load(folder)


@hookimpl
def register_generators(register: Callable[[GeneratorSpec | Path], None]) -> None:
    """Offer this folder, loaded by ``load_captioner``."""
    register(GeneratorSpec(Path(__file__).resolve().parent, loader=load_captioner))

"""The generators this process serves, by name, including the ones that failed to load.

An entry is immutable; hot-swapping a model (a better fine-tune was activated) puts a new entry
in place. Streams that already hold the old entry's model keep it alive and finish on it.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from genbot.config import Settings
from genbot.engine.paths import PathTuner
from genbot.errors import GenbotError, UnknownModel
from genbot.networks.card import ModelCard
from genbot.networks.checkpoint import CARD_FILE, LoadedGenerator, load_model
from genbot.plugins import LoadedPlugins, OfferedGenerator, collect_generators, describe_error, load_plugins

# One logger for everything about loading plugins, so its warnings tell the whole story.
log = logging.getLogger("genbot.plugins")

Status = Literal["loaded", "failed"]


@dataclass(frozen=True)
class GeneratorEntry:
    """One generator: ready to serve (``loaded``) or skipped with the reason (``failed``)."""

    name: str
    card: ModelCard | None  # None when even plugin.toml could not be read
    loaded: LoadedGenerator | None  # None when failed
    source: str  # "bundled:<folder>" or "entrypoint:<distribution>"
    status: Status
    error: str | None = None

    @classmethod
    def ok(cls, loaded: LoadedGenerator, source: str) -> GeneratorEntry:
        """A loaded entry named after its card."""
        return cls(loaded.card.name, loaded.card, loaded, source, "loaded")

    def serving_paths(self) -> dict[str, object] | None:
        """How the loaded model reads prompts and steps streams, and why (None: not a tuned model)."""
        paths = getattr(self.loaded.network, "serving_paths", None) if self.loaded is not None else None
        return paths.to_dict() if paths is not None else None

    @classmethod
    def failed(cls, name: str, source: str, error: str, card: ModelCard | None = None) -> GeneratorEntry:
        """A failed entry that records why."""
        return cls(name, card, None, source, "failed", error)


class ModelRegistry:
    """Generators by name; safe to read from the event loop while another thread swaps models."""

    def __init__(self, entries: Iterable[GeneratorEntry] = (), tuner: PathTuner | None = None) -> None:
        self.tuner = tuner or PathTuner()  # chooses each loaded model's serving paths
        self._entries: dict[str, GeneratorEntry] = {}
        self._lock = threading.Lock()
        for entry in entries:
            self.add(entry)

    def add(self, entry: GeneratorEntry) -> bool:
        """Add ``entry`` unless its name is taken by a loaded one (a loaded entry replaces a failed one)."""
        with self._lock:
            current = self._entries.get(entry.name)
            if current is not None and (current.status == "loaded" or entry.status == "failed"):
                log.warning("generator %s from %s skipped: %s has that name", entry.name, entry.source, current.source)
                return False
            self._entries[entry.name] = entry
            return True

    def get(self, name: str) -> GeneratorEntry:
        """The loaded generator called ``name``; ``UnknownModel`` if there is none or it failed."""
        entry = self._entries.get(name)
        if entry is None or entry.status != "loaded":
            raise UnknownModel(name, self.names())
        return entry

    def names(self) -> builtins.list[str]:
        """Names of the loaded generators, sorted."""
        return sorted(name for name, entry in self._entries.items() if entry.status == "loaded")

    def replace(self, name: str, loaded: LoadedGenerator) -> GeneratorEntry:
        """Make ``loaded`` the active model of ``name`` (also revives a failed entry); returns the new entry."""
        self.prepare(loaded)
        with self._lock:
            current = self._entries.get(name)
            if current is None:
                raise UnknownModel(name, self.names())
            entry = dataclasses.replace(current, card=loaded.card, loaded=loaded, status="loaded", error=None)
            self._entries[name] = entry
        return entry

    def prepare(self, loaded: LoadedGenerator) -> LoadedGenerator:
        """``prepare`` with this registry's path choices (forced paths, data_dir cache)."""
        return prepare(loaded, self.tuner)

    def list(self) -> builtins.list[GeneratorEntry]:
        """Every entry, loaded and failed, sorted by name."""
        return [self._entries[name] for name in sorted(self._entries)]


def build_registry(settings: Settings, plugins: LoadedPlugins | None = None) -> ModelRegistry:
    """Load every generator the enabled plugins offer (blocking: call it off the event loop)."""
    plugins = plugins if plugins is not None else load_plugins(settings)
    registry = ModelRegistry(tuner=tuner_for(settings))
    for offer in collect_generators(plugins):
        registry.add(load_generator(offer, registry.tuner))
    # After collecting: a plugin whose register_generators raised is recorded as it runs.
    for failure in plugins.failures:
        registry.add(GeneratorEntry.failed(failure.name, failure.source, failure.error))
    return registry


def tuner_for(settings: Settings) -> PathTuner:
    """The path tuner ``[engine]`` asks for, caching its measurements in ``data_dir``."""
    e = settings.engine
    return PathTuner(
        e.prime_path, e.step_path, e.batch_invariant, settings.data_dir, e.torch_threads, e.paths_cache, e.native
    )


def load_generator(offer: OfferedGenerator, tuner: PathTuner | None = None) -> GeneratorEntry:
    """Load one offered generator; any failure becomes a failed entry with the reason."""
    folder = offer.spec.folder
    try:
        loaded = prepare((offer.spec.loader or load_model)(folder), tuner)
    except Exception as e:  # CheckpointError for bad files; a custom loader may raise anything
        reason = describe_error(e)
        log.warning("generator in %s (%s) skipped: %s", folder, offer.source, reason)
        card = _read_card(folder)
        return GeneratorEntry.failed(card.name if card else folder.name, offer.source, reason, card)
    return GeneratorEntry.ok(loaded, offer.source)


def prepare(loaded: LoadedGenerator, tuner: PathTuner | None = None) -> LoadedGenerator:
    """Put a model in serving shape: on the CPU, eval mode, no gradients, measured serving paths."""
    model = loaded.network.to(torch.device("cpu")).eval().requires_grad_(False)
    with torch.inference_mode():
        model.share_step_weights()
        model.use_paths((tuner or PathTuner()).choose(model))
        # Build the step and priming caches now, not inside the first request's latency.
        _, state = model.prime(torch.zeros(1, 1, dtype=torch.long))
        model.step(torch.zeros(2, dtype=torch.long), tuple(s.expand(-1, 2, -1).contiguous() for s in state))
    return loaded


def _read_card(folder: Path) -> ModelCard | None:
    """The folder's card if it is readable (to name a failed entry), else None."""
    try:
        return ModelCard.read(folder / CARD_FILE)
    except GenbotError:
        return None

"""Model versions at the service level: the activation policy, rollback and live pickup.

* ``register_and_maybe_activate`` is what a finished fine-tune job calls: it records the new
  version and applies ``[versions] auto_activate`` from bot.toml (``if_better``, the default,
  activates only when the new val loss beats the active version's).
* A bundled plugin counts as version 1 of its model (val loss from its card's
  ``metrics.val_block``), so versions, activation and rollback work the same for every model.
* ``VersionWatcher`` runs inside every serving process: it polls the active versions and, when
  one differs from what the registry serves, loads that folder in a thread and hot-swaps it.
  Streams already running keep the model object they started on (the engine keys its
  per-model runners by that object), so they finish on the old version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from genbot.config import Settings
from genbot.engine.registry import GeneratorEntry, ModelRegistry
from genbot.errors import CheckpointError, GenbotError, InvalidRequest
from genbot.networks.card import ModelCard
from genbot.networks.checkpoint import CARD_FILE, LoadedGenerator, load_model
from genbot.plugins import bundled_folders
from genbot.storage.db import Database
from genbot.versions.store import (
    ModelVersionRow,
    activate_if,
    activate_version,
    active_versions,
    list_versions,
    register_version,
    seed_version,
)

log = logging.getLogger("genbot.versions")
VAL_METRIC = "val_block"  # the card metric a bundled model's version 1 is compared by
LOAD_FAILED = "model %s version %d (%s) failed to load, still serving the current one: %s"


async def register_and_maybe_activate(
    db: Database,
    settings: Settings,
    *,
    model: str,
    path: str,
    val_loss: float | None,
    val_stateful: float | None = None,
    parent_version: int | None = None,
    corpus: str | None = None,
    job_id: int | None = None,
) -> tuple[ModelVersionRow, bool]:
    """Record a new version and activate it as the policy says; returns (row, activated)."""
    await seed_bundled_version(db, settings, model)
    row = await register_version(
        db,
        model=model,
        path=path,
        val_loss=val_loss,
        val_stateful=val_stateful,
        parent_version=parent_version,
        corpus=corpus,
        job_id=job_id,
    )
    policy = settings.versions.auto_activate
    if policy == "never":
        return row, False
    rule = is_better if policy == "if_better" else _always
    row, activated = await activate_if(db, model, row.version, rule)
    log.info("model %s version %d registered (%s)", model, row.version, "activated" if activated else "not activated")
    return row, activated


def is_better(active: ModelVersionRow | None, candidate: ModelVersionRow) -> bool:
    """The ``if_better`` rule: lower val loss wins; with nothing active, anything goes live."""
    if active is None:
        return True
    if candidate.val_loss is None:
        return False  # unmeasured: never replaces a serving model on its own
    # An active version without a val loss cannot be compared; a measured one replaces it.
    return active.val_loss is None or candidate.val_loss < active.val_loss


def _always(_active: ModelVersionRow | None, _candidate: ModelVersionRow) -> bool:
    """The ``always`` rule."""
    return True


async def rollback(db: Database, model: str) -> ModelVersionRow:
    """Activate the version before the active one: its parent, else the highest lower number."""
    return await activate_version(db, model, (await rollback_target(db, model)).version)


async def rollback_target(db: Database, model: str) -> ModelVersionRow:
    """The version a rollback of ``model`` would activate; InvalidRequest if there is none."""
    versions = await list_versions(db, model)
    current = next((v for v in versions if v.active), None)
    if current is None:
        raise InvalidRequest(f"model {model!r} has no active version to roll back from")
    target = _previous(versions, current)
    if target is None:
        raise InvalidRequest(f"model {model!r} has no version before {current.version} to roll back to")
    return target


def _previous(versions: list[ModelVersionRow], current: ModelVersionRow) -> ModelVersionRow | None:
    """The version ``current`` replaced: its parent when it has one, else the next lower number."""
    by_number = {v.version: v for v in versions}
    parent = current.parent_version
    if parent is not None and parent != current.version and parent in by_number:
        return by_number[parent]
    lower = [v for v in versions if v.version < current.version]
    return lower[-1] if lower else None


# ----- bundled models as version 1 ---------------------------------------------------------------


async def ensure_bundled_versions(db: Database, registry: ModelRegistry) -> int:
    """Record each loaded generator as version 1 of its model if the model has no versions yet."""
    seeded = 0
    for entry in registry.list():
        if entry.loaded is not None and entry.card is not None:
            seeded += await _seed(db, entry.name, entry.loaded.path, entry.card) is not None
    return seeded


async def seed_bundled_version(db: Database, settings: Settings, model: str) -> ModelVersionRow | None:
    """Seed version 1 from the bundled plugin folder named ``model`` (for workers with no registry)."""
    found = await asyncio.to_thread(_bundled_card, settings, model)
    return None if found is None else await _seed(db, model, *found)


def _bundled_card(settings: Settings, model: str) -> tuple[Path, ModelCard] | None:
    """The bundled plugin folder whose card is called ``model``, and that card, if there is one."""
    for folder in bundled_folders(settings.plugins_dir):
        try:
            card = ModelCard.read(folder / CARD_FILE)
        except CheckpointError:
            continue  # a plugin folder with code and no card, or a broken card
        if card.name == model:
            return folder, card
    return None


async def _seed(db: Database, model: str, folder: Path, card: ModelCard) -> ModelVersionRow | None:
    """Seed version 1 of ``model`` from a model folder and its card."""
    return await seed_version(
        db,
        model=model,
        path=str(Path(folder).resolve()),
        val_loss=card.metrics.get(VAL_METRIC),
        val_stateful=card.metrics.get("val_stateful"),
    )


# ----- live pickup --------------------------------------------------------------------------------


class VersionWatcher:
    """Keeps the registry serving each model's active version, swapping models in place.

    It reacts to changes of the active version: the first pass makes the registry match the
    database, later passes act only on models whose active version changed since the pass before.
    So a model an admin put in place by hand (``genbot sample ./folder``) stays until the next
    activation, and a version that fails to load is logged once, not on every poll.
    """

    def __init__(self, db: Database, registry: ModelRegistry, poll_seconds: float) -> None:
        self.db = db
        self.registry = registry
        self.poll_seconds = poll_seconds
        self._seen: dict[str, tuple[int, str]] = {}  # model -> (version, path) last acted on
        self._stopping = asyncio.Event()
        # One pass at a time: a pass marks a version seen before its swap ends, so a second,
        # concurrent pass would return while the first is still loading that version.
        self._pass = asyncio.Lock()

    async def run(self) -> None:
        """Poll until ``stop()``; a failing poll is logged and the next one tries again."""
        while not await self._wait_for_stop(self.poll_seconds):
            try:
                await self.sync()
            except Exception:  # a database hiccup must not end live pickup for good
                log.exception("checking for newly active model versions failed")

    def stop(self) -> None:
        """Ask ``run`` to return after the poll in progress (cancelling mid-query upsets the pool)."""
        self._stopping.set()

    async def _wait_for_stop(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until ``stop()``; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def sync(self) -> list[str]:
        """One pass: swap in every active version the registry does not serve; returns the swapped names."""
        async with self._pass:
            swapped = []
            for model, row in sorted((await active_versions(self.db)).items()):
                if self._changed(row) and self._needs_swap(row) and await self._swap(row):
                    swapped.append(model)
            return swapped

    def _changed(self, row: ModelVersionRow) -> bool:
        """Whether ``row`` is news: a model's active version differs from the last pass's."""
        seen = (row.version, row.path)
        if self._seen.get(row.model) == seen:
            return False
        self._seen[row.model] = seen
        return True

    def _needs_swap(self, row: ModelVersionRow) -> bool:
        """Whether the registry serves something other than ``row``."""
        entry = next((e for e in self.registry.list() if e.name == row.model), None)
        return entry is None or not _serves(entry, row)

    async def _swap(self, row: ModelVersionRow) -> bool:
        """Load ``row``'s folder in a thread and make it the served model; False (logged) on failure."""
        try:
            # Loading and warming weights is blocking torch work: never on the event loop.
            await asyncio.to_thread(self._load_and_replace, row)
        except Exception as e:  # any failure: a bad version must never break serving
            reason = e if isinstance(e, GenbotError) else f"{type(e).__name__}: {e}"
            log.warning(LOAD_FAILED, row.model, row.version, row.path, reason)
            return False
        log.info("model %s now serves version %d from %s", row.model, row.version, row.path)
        return True

    def _load_and_replace(self, row: ModelVersionRow) -> None:
        """Load the version's folder, stamp its version on the card and put it in the registry."""
        loaded = load_model(Path(row.path))
        card = loaded.card.model_copy(update={"version": row.version})
        loaded = LoadedGenerator(loaded.network, loaded.vocab, card, loaded.path)
        if row.model in {e.name for e in self.registry.list()}:
            self.registry.replace(row.model, loaded)
        else:  # a model that exists only as trained versions (no bundled plugin)
            prepared = self.registry.prepare(loaded)  # the registry's forced paths and data_dir cache
            self.registry.add(GeneratorEntry(row.model, prepared.card, prepared, f"version:{row.path}", "loaded"))


def _serves(entry: GeneratorEntry, row: ModelVersionRow) -> bool:
    """Whether ``entry`` is ``row``: loaded, same version number, same folder."""
    if entry.loaded is None or entry.card is None:
        return False
    return entry.card.version == row.version and Path(entry.loaded.path).resolve() == Path(row.path).resolve()

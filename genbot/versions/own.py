"""Your own models: register a folder ``genbot train`` wrote, remove it, export any model as a plugin.

The service offers them as ``service.versions.add_model``, ``remove_model`` and ``export_model``.

* :func:`add_model` copies the model files (card, vocabulary, weights, README) into
  ``data_dir/models/NAME/v1``, renames the card to ``NAME``, checks the copy the way a plugin is
  checked (hash, shapes, vocabulary size) and records it as the active version 1 of ``NAME``.
  Every serving process then serves it: at start and on every poll the version watcher serves
  each model's active version, including models that exist only as versions.
* :func:`remove_model` forgets every version of a model that is not bundled and deletes
  ``data_dir/models/NAME``. Running servers keep serving what they loaded until they restart.
* :func:`export_model` writes a plugin folder (``plugin.toml``, ``vocab.json``,
  ``model.safetensors``, ``README.md``) that another genbot loads from its ``plugins_dir``.
* :func:`genbot.versions.names.check_model_name` is the rule for new model names (``genbot retrain --from scratch`` of
  a model that does not exist yet uses it too).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from genbot.config import Settings
from genbot.errors import CheckpointError, InvalidRequest, NotFound
from genbot.networks.card import ModelCard
from genbot.networks.checkpoint import CARD_FILE, VOCAB_FILE, atomic_write, load_model
from genbot.plugins import bundled_folders
from genbot.storage.db import Database
from genbot.versions.names import check_model_name
from genbot.versions.store import (
    ModelVersionRow,
    active_version,
    delete_versions,
    get_version,
    list_versions,
    seed_version,
)
from genbot.versions.watcher import VAL_METRIC, seed_bundled_version

README_FILE = "README.md"


def models_dir(settings: Settings) -> Path:
    """``data_dir/models``: version folders of trained and added models."""
    return settings.data_dir / "models"


def bundled_names(settings: Settings) -> set[str]:
    """Names of the bundled plugin folders (and of their cards, where they differ)."""
    names = set()
    for folder in bundled_folders(settings.plugins_dir):
        names.add(folder.name)
        try:
            names.add(ModelCard.read(folder / CARD_FILE).name)
        except CheckpointError:
            continue
    return names


async def add_model(
    db: Database, settings: Settings, name: str, folder: Path, *, description: str | None = None
) -> ModelVersionRow:
    """Register ``folder`` (what ``genbot train`` wrote) as active version 1 of a new model ``name``."""
    check_model_name(name)
    folder = Path(folder).expanduser()
    if name in bundled_names(settings) or await list_versions(db, name):
        raise InvalidRequest(f"model {name!r} already exists; pick another name or `genbot models remove {name}`")
    target = await asyncio.to_thread(_copy_checked, folder, models_dir(settings) / name, name, description)
    row = await seed_version(
        db,
        model=name,
        path=str(target),
        val_loss=_metric(target, VAL_METRIC),
        val_stateful=_metric(target, "val_stateful"),
    )
    if row is None:  # another admin added the same name meanwhile: theirs stands
        raise InvalidRequest(f"model {name!r} already exists")
    return row


def _copy_checked(source: Path, model_dir: Path, name: str, description: str | None) -> Path:
    """Copy the model files of ``source`` into ``model_dir/v1`` with the card renamed; checked by loading."""
    if not (source / CARD_FILE).is_file():
        raise CheckpointError(f"{source}: not a model folder (no {CARD_FILE}; `genbot train --out` writes one)")
    load_model(source)  # the source itself must load: hash, shapes and vocabulary
    card = ModelCard.read(source / CARD_FILE)
    update: dict[str, object] = {"name": name, "version": 1}
    if description is not None:
        update["description"] = description
    card = card.model_copy(update=update)
    staged = model_dir.parent / f".{name}-adding"
    shutil.rmtree(staged, ignore_errors=True)
    (staged / "v1").mkdir(parents=True)
    try:
        _write_model_files(source, staged / "v1", card)
        load_model(staged / "v1")
        if model_dir.exists():  # folders left by a model removed from the database by hand
            shutil.rmtree(model_dir)
        staged.rename(model_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return (model_dir / "v1").resolve()


def _write_model_files(source: Path, target: Path, card: ModelCard) -> None:
    """The vocabulary, weights, card and model-card README of ``source`` in ``target``."""
    for file in (VOCAB_FILE, card.weights.file):
        shutil.copy2(source / file, target / file)
    atomic_write(target / CARD_FILE, card.to_toml().encode("utf-8"))
    readme = source / README_FILE
    text = readme.read_text(encoding="utf-8") if readme.is_file() else model_readme(card)
    atomic_write(target / README_FILE, text.encode("utf-8"))


def _metric(folder: Path, key: str) -> float | None:
    """A metric from a model folder's card."""
    return ModelCard.read(folder / CARD_FILE).metrics.get(key)


def model_readme(card: ModelCard) -> str:
    """A model card for a folder that has none: what it is, its figures and how it was trained."""
    arch = card.architecture
    lines = [
        f"# {card.name}",
        "",
        card.description or "A character-level RNN text generator trained with genbot.",
        "",
        f"- architecture: {arch.cell.upper()} {arch.layers}x{arch.hidden}, embedding {arch.embedding}, "
        f"vocabulary {arch.vocab_size}",
        f"- corpus: {card.corpus or 'unknown'}; licence: {card.licence or 'unknown'}",
    ]
    lines += [f"- {key}: {value:.4f} nats/char" for key, value in sorted(card.metrics.items())]
    command = card.training.get("command")
    if command:
        lines += ["", "Trained with:", "", "```sh", str(command), "```"]
    return "\n".join(lines) + "\n"


async def remove_model(db: Database, settings: Settings, name: str) -> list[ModelVersionRow]:
    """Forget every version of a model that is not bundled and delete its folders; returns the versions."""
    if name in bundled_names(settings):
        raise InvalidRequest(
            f"model {name!r} is bundled; leave it out with plugins_enabled (GENBOT_PLUGINS) instead of removing it"
        )
    gone = await delete_versions(db, name)
    if not gone:
        raise NotFound(f"no model called {name!r} (see `genbot models`)")
    folder = models_dir(settings) / name
    await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
    return gone


async def export_model(
    db: Database, settings: Settings, name: str, target: Path, *, version: int | None = None
) -> Path:
    """Write version ``version`` (default: the active one) of ``name`` as a plugin folder at ``target``."""
    await seed_bundled_version(db, settings, name)
    try:
        row = await (get_version(db, name, version) if version is not None else _active(db, name))
    except NotFound:
        raise NotFound(f"model {name!r} has no version {version}") from None
    return await asyncio.to_thread(_export, Path(row.path), Path(target).expanduser(), name, row.version)


async def _active(db: Database, name: str) -> ModelVersionRow:
    row = await active_version(db, name)
    if row is None:
        raise NotFound(f"no model called {name!r} with an active version (see `genbot models`)")
    return row


def _export(source: Path, target: Path, name: str, number: int) -> Path:
    """Copy a version folder as a plugin (card renamed, numbered 1 where it lands) and check it loads."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidRequest(f"{target}: exists and is not an empty folder")
    card = ModelCard.read(source / CARD_FILE)
    training = dict(card.training) | {"exported_from": {"model": name, "version": number}}
    card = card.model_copy(update={"name": name, "version": 1, "training": training})
    target.mkdir(parents=True, exist_ok=True)
    try:
        _write_model_files(source, target, card)
        load_model(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target.resolve()

"""What a worker does with a finished training run: loss curve, version folder, registration.

The best model of ``data_dir/jobs/<id>/run`` is copied to ``data_dir/models/<model>/v<N>/``
(the card renamed to the model, numbered, and keeping the parent's description and sampling
defaults), then registered as a new version with ``register_and_maybe_activate``, whose policy
(``[versions] auto_activate``) decides whether it goes live. The val loss recorded is the
trainer's final block loss on the last 10% of the *job's* corpus (the model's own val split for
this training run); comparing it with a parent trained on another corpus is the policy's call.

Registration is idempotent per job: a worker that dies after registering and before marking
the job succeeded leaves a version with this ``job_id``, which the next attempt reuses.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genbot.config import Settings
from genbot.jobs.plots import loss_points, write_loss_curve
from genbot.jobs.store import JobRow, list_events
from genbot.networks.card import ModelCard
from genbot.networks.checkpoint import CARD_FILE, VOCAB_FILE, atomic_write
from genbot.networks.vocab import Vocab
from genbot.storage.db import Database
from genbot.versions.store import ModelVersionRow, list_versions
from genbot.versions.watcher import register_and_maybe_activate, seed_bundled_version


@dataclass(frozen=True)
class Published:
    """The version a job produced and the figures to store with the job."""

    version: ModelVersionRow
    activated: bool
    metrics: dict[str, Any]


def job_dir(settings: Settings, job_id: int) -> Path:
    """``data_dir/jobs/<id>``: the run folder (model + checkpoint) and the loss curve."""
    return settings.data_dir / "jobs" / str(job_id)


async def publish(db: Database, settings: Settings, job: JobRow, done: dict[str, Any]) -> Published:
    """Plot the loss curve, copy the best model to a version folder and register it."""
    run = job_dir(settings, job.id) / "run"
    curve = await _plot(db, job, job_dir(settings, job.id) / "loss.png")
    existing = [v for v in await list_versions(db, job.model) if v.job_id == job.id]
    if existing:
        version, activated = existing[0], existing[0].active
    else:
        folder = await _copy_version(db, settings, job, run)
        version, activated = await register_and_maybe_activate(
            db,
            settings,
            model=job.model,
            path=str(folder),
            val_loss=done["losses"].get("val_block"),
            val_stateful=done["losses"].get("val_stateful"),
            parent_version=job.parent_version,
            corpus=job.corpus,
            job_id=job.id,
        )
    metrics = _metrics(job, done, run) | {"loss_curve": str(curve), "version": version.version}
    return Published(version, activated, metrics | {"activated": activated, "model_path": version.path})


def _metrics(job: JobRow, done: dict[str, Any], run: Path) -> dict[str, Any]:
    """The trainer's final figures plus the characters the fine-tune added to the vocabulary."""
    keep = ("steps", "seconds", "chars_per_s", "params", "losses", "sample")
    metrics = {key: done[key] for key in keep if key in done}
    parent = job.args.get("parent_path")
    metrics["added_chars"] = _added_chars(Path(parent), run) if parent else []
    return metrics


def _added_chars(parent: Path, run: Path) -> list[str]:
    """Characters in the trained model's vocabulary that the parent's lacked (robust across resumes)."""
    try:
        before = set(Vocab.load(parent / VOCAB_FILE).chars)
        return [c for c in Vocab.load(run / VOCAB_FILE).chars if c not in before]
    except (OSError, ValueError):
        return []


async def _plot(db: Database, job: JobRow, path: Path) -> Path:
    """Write the loss curve from every attempt's logged step and eval events."""
    events = await list_events(db, job.id, kinds=("step", "eval"))
    train, val = loss_points(event.data for event in events)
    title = f"job {job.id}: {job.model} on {job.corpus}"
    return await asyncio.to_thread(write_loss_curve, train, val, path, title)


async def _copy_version(db: Database, settings: Settings, job: JobRow, run: Path) -> Path:
    """A new ``models/<model>/v<N>`` folder holding the run's best model, N one above what exists."""
    await seed_bundled_version(db, settings, job.model)  # a bundled model counts as version 1
    highest = max((v.version for v in await list_versions(db, job.model)), default=0)
    return await asyncio.to_thread(_copy_into_new_folder, settings.data_dir / "models" / job.model, highest, job, run)


def _copy_into_new_folder(models: Path, highest: int, job: JobRow, run: Path) -> Path:
    """Claim the first free ``v<N>`` above ``highest`` (mkdir is atomic) and copy the model in."""
    models.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[1:]) for p in models.glob("v*") if p.name[1:].isdigit()]
    number = max([highest, *taken]) + 1
    while True:
        try:
            (models / f"v{number}").mkdir()
            break
        except FileExistsError:
            number += 1
    folder = models / f"v{number}"
    card = _version_card(ModelCard.read(run / CARD_FILE), job, number)
    for name in (VOCAB_FILE, card.weights.file):
        shutil.copy2(run / name, folder / name)
    atomic_write(folder / CARD_FILE, card.to_toml().encode("utf-8"))
    atomic_write(folder / "README.md", _readme(card, job, number).encode("utf-8"))
    return folder.resolve()


def _version_card(card: ModelCard, job: JobRow, number: int) -> ModelCard:
    """The trained card renamed to the model and numbered, with the parent's description and sampling."""
    update: dict[str, Any] = {"name": job.model, "version": number, "corpus": job.corpus or card.corpus}
    parent = job.args.get("parent_path")
    if parent and (Path(parent) / CARD_FILE).is_file():
        parent_card = ModelCard.read(Path(parent) / CARD_FILE)
        update |= {"description": parent_card.description, "sampling": parent_card.sampling}
        update["licence"] = parent_card.licence
    training = dict(card.training) | {"job_id": job.id, "parent_version": job.parent_version}
    return card.model_copy(update=update | {"training": training})


def _readme(card: ModelCard, job: JobRow, number: int) -> str:
    """A short model card for the version folder."""
    origin = f"fine-tuned from version {job.parent_version}" if job.args.get("parent_path") else "trained from scratch"
    return (
        f"# {card.name} v{number}\n\n{card.description}\n\n"
        f"{origin.capitalize()} on corpus `{job.corpus}` by job {job.id} (`genbot retrain`).\n\n"
        f"Validation loss (nats/char, last 10% of the corpus): {card.metrics}\n"
    )

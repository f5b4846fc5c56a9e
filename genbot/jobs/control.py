"""``Jobs``: what the service offers about background jobs and schedules.

Queueing resolves everything a worker on any machine needs into the job's stored arguments: the
corpus file, the parent model folder and version (``--from active`` means the version active
*now*, when the job is queued or the schedule fires), the budget and the options. Bad input
raises ``InvalidRequest`` / ``UnknownModel`` and queues nothing.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from pathlib import Path
from typing import Any

from genbot.config import Settings
from genbot.corpora.store import get_corpus
from genbot.engine.registry import ModelRegistry
from genbot.errors import InvalidRequest, NotFound, UnknownModel
from genbot.jobs import schedule_store as store
from genbot.jobs import spec
from genbot.jobs import store as queue
from genbot.jobs.schedule_store import ScheduleRow
from genbot.jobs.schedules import Scheduler, next_fire_time
from genbot.jobs.spec import RetrainRequest
from genbot.jobs.store import JobEventRow, JobRow, NewJob
from genbot.jobs.worker import Worker
from genbot.plugins import bundled_folders
from genbot.storage.db import Database
from genbot.storage.tables import CorpusKind, utcnow
from genbot.versions.names import check_model_name
from genbot.versions.store import ModelVersionRow, active_version, active_versions, get_version, list_versions
from genbot.versions.watcher import ensure_bundled_versions, seed_bundled_version

RETRAIN = "retrain"


class Jobs:
    """Queue, inspect and cancel jobs; add and remove schedules; build workers and schedulers."""

    def __init__(self, db: Database, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry

    # ----- jobs ------------------------------------------------------------------------------

    async def retrain(self, request: RetrainRequest, *, schedule_id: int | None = None) -> JobRow:
        """Check and resolve a retrain request, then queue it."""
        return await queue.create_job(self.db, await self.resolve(request, schedule_id=schedule_id))

    async def resolve(self, request: RetrainRequest, *, schedule_id: int | None = None) -> NewJob:
        """The job row a request becomes; raises before anything is stored if it cannot run."""
        options = spec.check(request, self.settings.jobs)
        corpus_path = await self._corpus_path(request.corpus)
        parent = await self._parent(request.model, request.source)
        args = {
            "source": request.source,
            "corpus_path": corpus_path,
            "parent_path": parent.path if parent else None,
            "budget": request.budget(),
            "options": options.given(),
        }
        return NewJob(
            kind=RETRAIN,
            model=request.model,
            args=args,
            max_attempts=request.max_attempts or self.settings.jobs.max_attempts,
            corpus=request.corpus,
            parent_version=parent.version if parent else None,
            schedule_id=schedule_id,
        )

    async def list(
        self, *, status: str | None = None, model: str | None = None, limit: int = 50
    ) -> builtins.list[JobRow]:
        """Jobs, newest first."""
        return await queue.list_jobs(self.db, status=status, model=model, limit=limit)

    async def counts(self) -> dict[str, int]:
        """Jobs per status, counted by the database (one GROUP BY: cheap enough for every metrics scrape)."""
        return await queue.count_by_status(self.db)

    async def get(self, job_id: int) -> JobRow:
        """One job (NotFound if there is none)."""
        return await queue.get_job(self.db, job_id)

    async def events(self, job_id: int, after_id: int = 0) -> builtins.list[JobEventRow]:
        """A job's log lines after ``after_id``, oldest first."""
        return await queue.list_events(self.db, job_id, after_id=after_id)

    async def cancel(self, job_id: int) -> JobRow:
        """Cancel a queued job now or ask its worker to stop a running one."""
        return await queue.request_cancel(self.db, job_id)

    # ----- schedules -------------------------------------------------------------------------

    async def add_schedule(self, request: RetrainRequest, cron: str, *, now: datetime | None = None) -> ScheduleRow:
        """Store a schedule after checking its cron expression and that its job could be queued now."""
        first = next_fire_time(cron, now or utcnow())
        await self.resolve(request)
        return await store.create_schedule(
            self.db,
            model=request.model,
            corpus=request.corpus,
            cron=cron,
            job_args=request.to_args(),
            next_run_at=first,
        )

    async def schedules(self) -> builtins.list[ScheduleRow]:
        """Every schedule."""
        return await store.list_schedules(self.db)

    async def remove_schedule(self, schedule_id: int) -> None:
        """Delete a schedule (jobs it queued stay)."""
        await store.remove_schedule(self.db, schedule_id)

    # ----- background loops ------------------------------------------------------------------

    def worker(self, **overrides: Any) -> Worker:
        """A worker on this database (``overrides``: owner, lease_s, poll_s, heartbeat_s, threads, nproc)."""
        return Worker(self.db, self.settings, **overrides)

    def scheduler(self) -> Scheduler:
        """A scheduler that queues jobs through this object."""
        return Scheduler(self.db, self.resolve, poll_s=self.settings.jobs.poll_seconds)

    # ----- resolution ------------------------------------------------------------------------

    async def _corpus_path(self, name: str) -> str:
        """The stored text file of a registered text corpus."""
        try:
            corpus = await get_corpus(self.db, name)
        except NotFound:
            raise InvalidRequest(f"unknown corpus {name!r}: register it first with `genbot corpus add`") from None
        if corpus.kind != CorpusKind.TEXT:
            raise InvalidRequest(f"corpus {name!r} holds {corpus.kind}; a char-RNN retrain needs a text corpus")
        if not Path(corpus.path).is_file():
            raise InvalidRequest(f"corpus {name!r}: its file {corpus.path} is missing")
        return str(Path(corpus.path).resolve())

    async def _parent(self, model: str, source: str) -> ModelVersionRow | None:
        """The version a job starts from (None: from scratch); the model must be known, unless it starts from scratch.

        ``--from scratch`` for a name no model has yet makes a brand-new generator (its first version
        is published as version 1 and goes live as nothing else is active).
        """
        number = spec.parse_source(source)
        if source == "scratch":
            if not await self._is_known(model):
                check_model_name(model)
            return None
        await self._require_known(model)
        if number is not None:
            try:
                return await get_version(self.db, model, number)
            except NotFound:
                raise InvalidRequest(f"model {model!r} has no version {number}") from None
        active = await active_version(self.db, model)
        if active is None:
            raise InvalidRequest(f"model {model!r} has no active version; pick one with --from VERSION")
        return active

    async def _require_known(self, model: str) -> None:
        """UnknownModel unless the model has versions (bundled plugins count as version 1)."""
        if not await self._is_known(model):
            raise UnknownModel(model, await self._known_models())

    async def _is_known(self, model: str) -> bool:
        """Whether the model has versions (bundled plugins count as version 1, seeded here)."""
        if await list_versions(self.db, model):
            return True
        await seed_bundled_version(self.db, self.settings, model)
        if self.registry is not None:
            await ensure_bundled_versions(self.db, self.registry)
        return bool(await list_versions(self.db, model))

    async def _known_models(self) -> builtins.list[str]:
        """Model names a retrain could name: served ones, bundled plugin folders, versioned ones."""
        names = set(self.registry.names()) if self.registry else set()
        names |= {folder.name for folder in bundled_folders(self.settings.plugins_dir)}
        return sorted(names | set(await active_versions(self.db)))

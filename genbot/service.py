"""GenbotService: the one facade every front end calls.

It owns the database, the model registry and the generation engine for the life of one
``async with`` block. A generation goes: validate → resolve the model → store a ``running`` row →
engine stream → the caller reads chunks → one finishing write (completed / cancelled / failed)
with the output, parameters, seed and timings. The write is done by a task the service owns, so
a front end that stops reading (client gone) still leaves a correct row.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from genbot.config import Settings
from genbot.corpora.control import Corpora
from genbot.engine.batching import GenerationEngine
from genbot.engine.captions import (
    CaptionResult,
    CaptionSlots,
    captioner_of,
    check_params,
    pick_seed,
    run_caption,
)
from genbot.engine.memory import limit_malloc_arenas
from genbot.engine.registry import GeneratorEntry, ModelRegistry, build_registry
from genbot.engine.sampling import SamplingParams
from genbot.engine.streams import GenerationStats, Stream
from genbot.errors import ConfigError, InvalidRequest
from genbot.history.control import Archive
from genbot.history.retention import DailyPrune
from genbot.jobs import Jobs
from genbot.keys.control import Keys
from genbot.networks.checkpoint import load_model
from genbot.plugins import LoadedPlugins, load_plugins
from genbot.presets.control import Presets
from genbot.presets.rules import PresetParams
from genbot.presets.rules import parse_params as parse_preset
from genbot.presets.rules import settings_params as preset_params
from genbot.quotas.policy import QuotaPolicy
from genbot.storage import repository
from genbot.storage.db import Database
from genbot.storage.leases import ProcessLease, reap
from genbot.storage.repository import GenerationRow, NewGeneration
from genbot.storage.schema import is_current
from genbot.storage.tables import GenerationStatus
from genbot.threads import Identity, context, owned, thread
from genbot.versions.control import Versions
from genbot.versions.watcher import VersionWatcher, ensure_bundled_versions

if TYPE_CHECKING:
    from genbot.analysis.report import InspectReport, InspectRequest

log = logging.getLogger("genbot.service")
WATCHER_STOP_S = 10.0  # how long shutdown waits for a version load in progress
PROGRESS_EVERY_S = 2.0  # how often a long generation's partial output is saved (survives a crash)
PROGRESS_GATHER_S = 0.05  # progress saves falling due within this long share one transaction
_STATUS = {"length": "completed", "stop": "completed", "cancelled": "cancelled", "error": "failed"}


@dataclass(frozen=True)
class Requester:
    """Who asks, as stored on each generation row: the front end and its user, guild, channel or API key."""

    frontend: str = "cli"
    user_id: str | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    api_key_id: str | None = None


@dataclass
class GenerationRequest:
    """What a front end asks for; unset sampling fields take the model's and bot.toml's defaults."""

    model: str
    prompt: str = ""
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    length: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    requester: Requester = field(default_factory=Requester)  # who asks: stored on the row, owns it
    # Continue a stored generation (its tail is the context; ``prompt`` is added after it), or run
    # one again with a new seed (same prompt and settings); only the caller's own rows, or any for an admin.
    continue_from: int | None = None
    again_of: int | None = None
    preset: str | None = None  # the caller's (else a global) preset fills the fields left unset
    admin: bool = False

    @property
    def identity(self) -> Identity:
        """Who asks, as owner of generations and presets."""
        who = self.requester
        return Identity(who.frontend, who.user_id, who.api_key_id, self.admin)


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with its preset and the generation it continues or repeats read once (``service.resolve``).

    ``generate`` runs it without reading them again, so a front end that looks at the resolved
    length first (to reserve quota) starts exactly what it looked at.
    """

    request: GenerationRequest  # the preset's and the stored generation's settings filled in
    parent_id: int | None  # the generation the new row continues (its thread), if any

    def with_length(self, length: int | None) -> ResolvedRequest:
        """The same request generating ``length`` characters (a quota's cap)."""
        return dataclasses.replace(self, request=dataclasses.replace(self.request, length=length))


@dataclass
class GenerationResult:
    """How a generation ended, after its row is written."""

    id: int
    status: str
    output: str
    stats: GenerationStats


class Generation:
    """A running generation: iterate for text chunks, ``cancel()``, ``await result()``."""

    def __init__(
        self,
        entry: GeneratorEntry,
        stream: Stream,
        row_id: int,
        writer: asyncio.Task[GenerationResult],
        parent_id: int | None = None,
        prompt: str = "",
    ):
        self.entry = entry
        self.stream = stream
        self.id = row_id
        self._writer = writer
        self.parent_id = parent_id  # the generation this one continues or repeats
        self.prompt = prompt  # what the model was given (a continuation's whole context)

    @property
    def model(self) -> str:
        """Name of the generator serving this request."""
        return self.entry.name

    @property
    def version(self) -> int:
        """Version of the model serving this request."""
        return self.entry.card.version if self.entry.card else 1

    @property
    def params(self) -> SamplingParams:
        """The effective parameters, including the seed actually used."""
        return self.stream.params

    @property
    def mapped(self) -> dict[str, str]:
        """Prompt characters replaced by look-alikes the model knows."""
        return self.stream.encoded.mapped

    @property
    def dropped(self) -> list[str]:
        """Prompt characters the model has never seen, left out of what it read."""
        return self.stream.encoded.dropped

    def __aiter__(self) -> AsyncIterator[str]:
        return self.stream.__aiter__()

    def cancel(self) -> None:
        """Stop generating; the row will say ``cancelled`` and keep the partial output."""
        self.stream.cancel()

    async def result(self) -> GenerationResult:
        """Wait for the end and for the row to be written."""
        return await asyncio.shield(self._writer)


class GenbotService:
    """Database + registry + engine behind one async lifecycle."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None, *, serving: bool = True) -> None:
        self.settings = settings
        self.registry = registry
        # serving=False: the database and jobs only (workers, admin commands): no models are
        # loaded, no engine or version watcher runs, and other processes' generations are left alone.
        self.serving = serving
        self.db: Database | None = None
        self.plugins: LoadedPlugins | None = None  # the plugins the registry was built from (their other hooks)
        self.engine = GenerationEngine(
            settings.engine.max_streams_per_model,
            settings.engine.max_queue,
            settings.engine.torch_threads,
            settings.engine.batch_invariant,
        )
        self._writers: set[asyncio.Task[GenerationResult]] = set()
        self._progress: dict[int, str] = {}  # row id -> output so far, waiting for the next shared save
        self._progress_save: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._version_watcher: VersionWatcher | None = None
        self._version_watch: asyncio.Task[None] | None = None
        self._quotas: QuotaPolicy | None = None
        self.process: ProcessLease | None = None  # this serving process's heartbeated row (owner of its rows)
        self.prune: DailyPrune | None = None  # the daily prune this serving process offers its heartbeat
        self._caption_slots = CaptionSlots(settings.engine.max_concurrent_captions)

    async def __aenter__(self) -> GenbotService:
        started = datetime.now(UTC)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        limit_malloc_arenas()  # before model worker threads exist
        self.db = await self._stack.enter_async_context(Database.open(self.settings.effective_database_url))
        await _require_current_schema(self.db)
        if not self.serving:
            return self
        self.process = await self._stack.enter_async_context(ProcessLease(self.db).held())
        self.prune = DailyPrune(self.db, self.settings.storage, self.process.id)
        self.process.chores.append(self.prune.tick)
        # Only rows whose owner stopped heartbeating: other live processes keep theirs.
        interrupted = await reap(self.db, datetime.now(UTC), started_before=started)
        if interrupted:
            log.warning("%d generation(s) were interrupted by an earlier stop; marked failed", interrupted)
        if self.registry is None:
            # Loading weights is blocking file and tensor work: keep it off the event loop.
            self.plugins = await asyncio.to_thread(load_plugins, self.settings)
            self.registry = await asyncio.to_thread(build_registry, self.settings, self.plugins)
        await self.engine.start()
        await self._start_version_watcher()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_version_watcher()
        # Closing the engine ends every open stream; their rows are written before the DB closes.
        await self.engine.close()
        if self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)
        if self._progress_save is not None:
            await asyncio.gather(self._progress_save, return_exceptions=True)
        await self._stack.aclose()

    # ----- generation ------------------------------------------------------------------------

    def params_for(self, entry: GeneratorEntry, req: GenerationRequest) -> SamplingParams:
        """The request's parameters over the card's own defaults over bot.toml's."""
        limits = self.settings.sampling
        card = entry.card.sampling if entry.card else None
        explicit = card.model_fields_set if card else set()

        def pick(value: Any, name: str, setting: Any) -> Any:
            if value is not None:
                return value
            return getattr(card, name) if card is not None and name in explicit else setting

        temperature = pick(req.temperature, "temperature", limits.temperature)
        if isinstance(temperature, int | float) and temperature > limits.max_temperature:
            raise InvalidRequest(f"temperature must be at most {limits.max_temperature}, got {temperature}")
        params = SamplingParams(
            temperature=temperature,
            top_k=pick(req.top_k, "top_k", limits.top_k),
            top_p=pick(req.top_p, "top_p", limits.top_p),
            max_length=pick(req.length, "length", limits.length),
            seed=req.seed,
            stop=tuple(req.stop),
        )
        return params.within(limits.max_length)

    async def generate(self, req: GenerationRequest | ResolvedRequest) -> Generation:
        """Start a generation; raises InvalidRequest, UnknownModel, NotFound or Busy before anything runs."""
        resolved = req if isinstance(req, ResolvedRequest) else await self.resolve(req)
        req, parent_id = resolved.request, resolved.parent_id
        limit = self.settings.sampling.max_prompt_chars
        if len(req.prompt) > limit:
            raise InvalidRequest(f"the prompt has {len(req.prompt):,} characters; the limit is {limit:,}")
        entry = self._registry.get(req.model)
        if entry.card is not None and entry.card.kind == "captioner":
            raise InvalidRequest(f"model {entry.name!r} describes images: send an image to caption instead")
        params = self.params_for(entry, req).with_seed()
        assert entry.loaded is not None  # get() only returns loaded entries
        stream = self.engine.submit(entry.loaded, req.prompt, params)
        try:
            owner = self.process.id if self.process else None
            row = _new_row(req, entry, stream.params, owner, parent_id)
            row_id = await repository.start_generation(self._db, row)
        except BaseException:
            stream.cancel()
            raise
        writer = asyncio.create_task(self._record(row_id, stream), name=f"genbot-generation-{row_id}")
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)
        return Generation(entry, stream, row_id, writer, parent_id, req.prompt)

    @property
    def context_chars(self) -> int:
        """Characters a continuation or a chat reads: ``[sampling] context_chars``, within the prompt limit."""
        sampling = self.settings.sampling
        return min(sampling.context_chars, sampling.max_prompt_chars)

    async def resolve(self, req: GenerationRequest) -> ResolvedRequest:
        """``req`` with its preset and the generation it continues or repeats filled in, and the parent's id.

        Fields the request sets win over the preset's, which win over the stored generation's.
        Each is read once, here: pass the result to ``generate`` to run exactly this.
        """
        if req.continue_from is not None and req.again_of is not None:
            raise InvalidRequest("continue_from and again_of: give one or the other")
        if req.preset is not None:
            preset = await self.presets.find(req.identity.preset_owner, req.preset)
            req = _with_defaults(req, preset.params)
        if req.continue_from is not None:
            parent = await owned(self._db, req.continue_from, req.identity)
            prompt = context(parent, req.prompt, self.context_chars)
            return ResolvedRequest(
                _with_defaults(dataclasses.replace(req, prompt=prompt), _params_of(parent)), parent.id
            )
        if req.again_of is not None:
            original = await owned(self._db, req.again_of, req.identity)
            if original.status == GenerationStatus.RUNNING:
                raise InvalidRequest(f"generation {original.id} is still running: try again once it has finished")
            again = _with_defaults(dataclasses.replace(req, prompt=original.prompt), _params_of(original))
            return ResolvedRequest(again, original.parent_id)  # an alternative at the same place in its thread
        if not req.model:
            raise InvalidRequest("model: name a generator (or a preset that names one)")
        return ResolvedRequest(req, None)

    async def _record(self, row_id: int, stream: Stream) -> GenerationResult:
        """Save partial output now and then, and the final row when the stream ends."""
        while True:
            try:
                stats = await asyncio.wait_for(stream.result(), timeout=PROGRESS_EVERY_S)
                break
            except TimeoutError:
                self._queue_progress(row_id, stream.output)
        output = stream.output
        status = _STATUS[stats.done_reason]
        # Never raises: a database error here must not fail the stream's caller (retried, then logged).
        await repository.finish_generation_reliably(
            self._db,
            row_id,
            output=output,
            status=status,
            chars=len(output),
            ttfc_ms=stats.first_char_duration / 1e6 if output else None,
            duration_ms=stats.total_duration / 1e6,
            error=stats.error,
        )
        return GenerationResult(row_id, status, output, stats)

    def _queue_progress(self, row_id: int, output: str) -> None:
        """Save a running generation's output with every other one due about now, in one transaction.

        Generations that start together come due together: 64 streams saved one by one were 64
        write transactions on the event loop every 2 s, competing with the model thread for the GIL.
        """
        self._progress[row_id] = output
        if self._progress_save is None or self._progress_save.done():
            self._progress_save = asyncio.create_task(self._save_progress(), name="genbot-progress")

    async def _save_progress(self) -> None:
        while self._progress:  # also what was queued while the last transaction ran
            await asyncio.sleep(PROGRESS_GATHER_S)  # let the others due now join this transaction
            outputs, self._progress = self._progress, {}
            try:
                await repository.update_progress_many(self._db, outputs)
            except Exception:  # a lost progress save costs nothing the final write won't redo
                log.warning("could not save the progress of %d generation(s)", len(outputs), exc_info=True)

    async def caption(
        self,
        model: str,
        image: bytes,
        *,
        beam: int = 3,
        temperature: float | None = None,
        seed: int | None = None,
        count: int = 3,
        requester: Requester = Requester(),
    ) -> CaptionResult:
        """Describe an image (encoded bytes): beam search, or sampling when ``temperature`` is set; stores a row.

        Raises InvalidRequest (bad parameters, a text model), UnknownModel or ImageError before anything is stored,
        and Busy while ``[engine] max_concurrent_captions`` images are already being captioned.
        """
        entry = self._registry.get(model)
        loaded = captioner_of(entry)
        check_params(beam, temperature, count, self.settings.sampling.max_temperature)
        seed = pick_seed(temperature, seed)
        started = time.perf_counter()
        # Decoding the image and running the CNN + beam search is blocking torch work; a decoded
        # upload holds up to a few hundred MB, so only a few run at once (the rest get Busy).
        run = self._caption_slots.run
        described, captions = await run(run_caption, loaded, image, beam, temperature, seed, count)
        duration_ms = (time.perf_counter() - started) * 1e3
        version = entry.card.version if entry.card else 1
        row = NewGeneration(
            model=entry.name, model_version=version, prompt=described, temperature=temperature or 0.0,
            max_length=loaded.captioner.config.max_words, seed=seed, **asdict(requester),
        )  # fmt: skip
        row_id = await repository.start_generation(self._db, row)
        text = captions[0].text if captions else ""
        await repository.finish_generation(self._db, row_id, text, "completed", len(text), None, duration_ms)
        method = "beam" if temperature is None else "sample"
        return CaptionResult(
            row_id, entry.name, version, described, method, beam, temperature, seed, captions, duration_ms
        )

    # ----- models, history, privacy ----------------------------------------------------------

    def models(self) -> list[GeneratorEntry]:
        """Every generator, loaded or failed, with its card."""
        return self._registry.list()

    def model(self, name: str) -> GeneratorEntry:
        """The loaded generator called ``name`` (UnknownModel if there is none or it failed)."""
        return self._registry.get(name)

    def model_names(self) -> list[str]:
        """Names of the loaded generators, sorted (none before the service opens, or without serving)."""
        return self.registry.names() if self.registry else []

    def queue_depth(self) -> int:
        """Streams queued or running across every loaded generator."""
        entries = self.registry.list() if self.registry else []
        loaded = [entry.loaded for entry in entries if entry.loaded is not None]
        return sum(self.engine.queued_or_running(model) for model in loaded)

    def serving_paths(self) -> dict[str, dict[str, object]]:
        """How each loaded, tuned generator reads prompts and steps streams, by name (for ``/metrics``)."""
        entries = self.registry.list() if self.registry else []
        return {entry.name: paths for entry in entries if (paths := entry.serving_paths())}

    def add_model_folder(self, folder: Path) -> GeneratorEntry:
        """Serve a model folder that is not a bundled plugin (``genbot sample ./my-model``)."""
        loaded = self._registry.prepare(load_model(folder))
        if loaded.card.name in self._registry.names():
            return self._registry.replace(loaded.card.name, loaded)
        self._registry.add(GeneratorEntry.ok(loaded, f"folder:{folder}"))
        return self._registry.get(loaded.card.name)

    async def inspect(self, model: str, request: InspectRequest) -> InspectReport:
        """Look inside a loaded generator: unit activations, feature discovery, rendered views."""
        from genbot.analysis.report import inspect_model

        entry = self._registry.get(model)
        assert entry.loaded is not None  # get() only returns loaded entries
        # Tracing and rendering are seconds of torch and matplotlib work: keep them off the event loop.
        return await asyncio.to_thread(inspect_model, entry.loaded, request)

    async def history(self, **filters: Any) -> list[GenerationRow]:
        """Stored generations, newest first, or best match first with ``query`` (a full-text search).

        Filters: model, user_id, api_key_id, search (a substring), query, since, until, limit, offset.
        """
        return await repository.list_generations(self._db, **filters)

    async def generation(self, gen_id: int, who: Identity) -> GenerationRow:
        """One stored generation ``who`` may see (NotFound otherwise, the same as for an unknown id)."""
        return await owned(self._db, gen_id, who)

    async def thread(self, gen_id: int, who: Identity) -> list[GenerationRow]:
        """The chain of continuations through ``gen_id``, oldest first (only rows ``who`` may see)."""
        return await thread(self._db, gen_id, who)

    async def forget(self, user_id: str) -> int:
        """Delete everything stored about one user (generations, usage, quotas, slots); returns how many generations."""
        return await repository.forget_user(self._db, user_id)

    # ----- quotas -----------------------------------------------------------------------------

    @property
    def quotas(self) -> QuotaPolicy:
        """Per-user/guild/key quotas and cooldowns (one policy per service: it counts running generations)."""
        if self._quotas is None:
            self._quotas = QuotaPolicy(self._db, self.process.id if self.process else None)
        return self._quotas

    # ----- model versions served live -------------------------------------------------------

    async def _start_version_watcher(self) -> None:
        """Record bundled models as version 1, serve each active version, then watch for changes."""
        await ensure_bundled_versions(self._db, self._registry)
        watcher = VersionWatcher(self._db, self._registry, self.settings.versions.poll_seconds)
        await watcher.sync()  # a restarted server serves the active versions from its first request
        self._version_watcher = watcher
        self._version_watch = asyncio.create_task(watcher.run(), name="genbot-version-watcher")

    async def _stop_version_watcher(self) -> None:
        """Let the watcher finish its poll and return; cancel it if a model load takes too long."""
        if self._version_watcher is None or self._version_watch is None:
            return
        self._version_watcher.stop()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._version_watch), WATCHER_STOP_S)
        self._version_watch.cancel()
        await asyncio.gather(self._version_watch, return_exceptions=True)

    # ----- the concerns' own facades ---------------------------------------------------------

    @property
    def corpora(self) -> Corpora:
        """Add, list, show and remove corpora."""
        return Corpora(self._db, self.settings)

    @property
    def versions(self) -> Versions:
        """A model's versions: list, activate, roll back (serving processes pick changes up live)."""
        return Versions(self._db, self.settings)

    @property
    def presets(self) -> Presets:
        """Named presets of sampling settings: save, find, list, delete; the REPL's last used settings."""
        return Presets(self._db)

    @property
    def archive(self) -> Archive:
        """The history as a whole: export every matching row, import an export, prune."""
        return Archive(self._db, self.settings)

    @property
    def keys(self) -> Keys:
        """HTTP API keys: create, list, revoke, authenticate, touch."""
        return Keys(self._db)

    @property
    def jobs(self) -> Jobs:
        """Queue, inspect and cancel fine-tune jobs; schedules; worker and scheduler loops."""
        return Jobs(self._db, self.settings, self.registry)

    @property
    def _db(self) -> Database:
        if self.db is None:
            raise RuntimeError("GenbotService used outside its 'async with' block")
        return self.db

    @property
    def _registry(self) -> ModelRegistry:
        if self.registry is None:
            raise RuntimeError("GenbotService used outside its 'async with' block")
        return self.registry


async def _require_current_schema(db: Database) -> None:
    """A shared server database is migrated by an admin (``genbot db upgrade``), never behind their back."""
    if db.is_sqlite:
        return  # Database.open migrated the embedded file already
    if not await is_current(db.engine):
        from genbot.storage.migrate import current_revision, head_revision

        current = await current_revision(db.engine)
        raise ConfigError(
            f"the database is at migration {current or 'none'}, genbot needs {head_revision()}: run `genbot db upgrade`"
        )


def _params_of(row: GenerationRow) -> PresetParams:
    """A stored generation's settings, as defaults for its continuation or repeat (never its seed)."""
    return PresetParams(
        model=row.model, temperature=row.temperature, top_k=row.top_k, top_p=row.top_p, length=row.max_length,
        stop=[s for s in row.stop if s],
    )  # fmt: skip


def _with_defaults(req: GenerationRequest, params: PresetParams) -> GenerationRequest:
    """``req`` with the fields it leaves unset taken from ``params``."""
    seed = params.seed if params.seed_policy == "fixed" else None
    return dataclasses.replace(
        req,
        model=req.model or params.model or "",
        temperature=req.temperature if req.temperature is not None else params.temperature,
        top_k=req.top_k if req.top_k is not None else params.top_k,
        top_p=req.top_p if req.top_p is not None else params.top_p,
        length=req.length if req.length is not None else params.length,
        seed=req.seed if req.seed is not None else seed,
        stop=req.stop or list(params.stop),
    )


def _new_row(
    req: GenerationRequest,
    entry: GeneratorEntry,
    params: SamplingParams,
    owner: str | None = None,
    parent_id: int | None = None,
) -> NewGeneration:
    return NewGeneration(
        model=entry.name,
        model_version=entry.card.version if entry.card else None,
        prompt=req.prompt,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
        max_length=params.max_length,
        seed=params.seed,
        stop=list(params.stop),
        owner=owner,
        parent_id=parent_id,
        **asdict(req.requester),
    )


__all__ = [
    "GenbotService",
    "Generation",
    "GenerationRequest",
    "GenerationResult",
    "GenerationStatus",
    "Identity",
    "PresetParams",
    "Requester",
    "ResolvedRequest",
    "generators",
    "parse_preset",
    "preset_params",
    "upgrade_schema",
]


def generators(settings: Settings) -> list[GeneratorEntry]:
    """Every generator the plugins offer, loaded or failed, without opening the database (``genbot plugins``)."""
    return build_registry(settings).list()


async def upgrade_schema(settings: Settings) -> None:
    """Apply pending migrations to the configured database (``genbot db upgrade``)."""
    from genbot.storage.migrate import upgrade_database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_database(settings.effective_database_url)

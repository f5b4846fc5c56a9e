"""GenerationEngine: continuous batching of character streams, one worker thread per model.

Each loaded model gets a runner whose worker thread owns that model's batch: every step advances
all of its active streams by one character with ONE batched ``model.step`` call. Streams join and
leave only at step boundaries; finished and cancelled streams are dropped with ``index_select``.

Batched prefill: new streams are read together. Every stream waiting to be read is fed, in one
batched call of the model's fused prompt reader (``read``), the next chunk of its own prompt;
a stream whose prompt ends samples its first character and its state is concatenated into the
batch along dim 1. Chunks are sized by time (``CHUNK_S``) and, while streams are running,
alternate with decode steps so that reading takes at most ``READ_SHARE`` of the time: a running
stream waits at most one chunk, and keeps more than half its rate while others are admitted.
Models without ``read`` (fakes, custom step models) are primed one stream at a time.

Why a thread per model (not a pool, not the event loop): a model's streams advance in lock-step,
so its work is sequential anyway; the thread owns the batch state without locks; different models
still overlap because torch releases the GIL inside its kernels. A runner's thread exits as soon
as the model has nothing to do, so a replaced model version is not kept alive by an idle thread.

Why a small batch may be padded: a seeded stream must give the same text alone or in a batch.
BLAS switches kernels (with other summation orders) for small matrices: a matrix-vector kernel
for one row, and on some CPUs other kernels below 4 or 8 rows. So on a path whose small-batch
results differ (``ServingPaths.step_rows``/``prime_rows`` > 1, found by a check when the model is
loaded) fewer rows run padded with copies of the first. Where even one row agrees (FBGEMM's
float16 kernels on some CPUs) rows = 1 and nothing is padded. A prompt read in chunks, in a
batch of any size, gives the same state as read alone in one call (the same check covers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import Tensor

from genbot.engine.sampling import UNIFORM_BITS, UNIFORM_SCALE, BatchSampler, SamplingParams
from genbot.engine.streams import DecodeState, DoneReason, Stream
from genbot.errors import Busy, InvalidRequest
from genbot.networks.charrnn import pad_rows
from genbot.networks.checkpoint import LoadedGenerator
from genbot.networks.native import NativeSampling
from genbot.networks.vocab import Vocab

State = tuple[Tensor, ...]
# A one-row matmul takes BLAS's gemv path, whose rounding differs from batched rows: padding a
# lone stream to two rows makes its text identical to the same request in a batch of any size.
MIN_ROWS = 2
WAKE_INTERVAL_S = 0.005  # consumers get chunks at most this often (plus on the first and last char)
CHUNK_S = 0.02  # a prompt-reading chunk takes about this long while streams are running
IDLE_CHUNK_S = 0.1  # ... and while none are (a new arrival waits for at most one chunk)
READ_SHARE = 1 / 3  # at most this share of the time goes to reading prompts while streams run
# A model whose step path is native decodes a run of characters per call (``CharRNN.decode``):
# about this long, so a cancel, an arrival or a prompt chunk waits at most that, and at most this
# many characters (the Python work of one call is then a small share of each character's cost).
# Each call ends in a wait for the GIL, which a busy event loop (an HTTP server's) holds a third
# of the time: at 64 streams a 2 ms call is one step, and 5 ms calls served 64 SSE clients faster.
DECODE_CALL_S = 0.005
MAX_DECODE_STEPS = 32
# How long a thread may hold the GIL while another waits for it. A worker coming back from a native
# call waits for the event loop to let go of the GIL; at Python's default 5 ms that wait was a
# real share of a 64-stream step (~5 ms), and 0.5 ms served 64 streams through the service
# ~10% faster. Set while an engine runs, restored when it closes.
SWITCH_INTERVAL_S = 0.0005


class StepModel(Protocol):
    """What the engine needs from a generator model."""

    def initial_state(self, batch: int) -> State:
        """Zero state for ``batch`` streams, tensors shaped (layers, batch, hidden)."""
        ...

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits (B, T, V) for a whole sequence (B, T), and the final state."""
        ...

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Logits (B, V) for one character per stream (B,), and the next state."""
        ...


class GenerationEngine:
    """Runs generation streams for any number of models, batching the streams of each."""

    def __init__(
        self, max_streams_per_model: int, max_queue: int, torch_threads: int = 1, batch_invariant: bool = True
    ) -> None:
        if max_streams_per_model < 1 or max_queue < 0 or torch_threads < 1:
            raise ValueError("need max_streams_per_model >= 1, max_queue >= 0, torch_threads >= 1")
        self.max_streams = max_streams_per_model
        self.max_queue = max_queue
        self.torch_threads = torch_threads
        self.min_rows = MIN_ROWS if batch_invariant else 1  # 1: a lone stream runs ~1.3x faster
        self._lock = threading.Lock()  # guards _runners and each runner's pending/admitted/cancels
        self._runners: dict[int, _ModelRunner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._waiting: set[Stream] = set()  # consumers blocked in __anext__ (event loop only)
        self._wake_scheduled = False
        self._last_wake = 0.0  # perf_counter() of the last throttled wake-up
        self._switch_interval: float | None = None  # the process's, while this engine runs

    async def start(self) -> None:
        """Bind the engine to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        if self._switch_interval is None and sys.getswitchinterval() > SWITCH_INTERVAL_S:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)

    async def close(self) -> None:
        """Cancel every stream, wait for the worker threads, deliver the final results."""
        self._closing = True  # workers see it at their next step boundary
        with self._lock:
            threads = [r.thread for r in self._runners.values()]
        for t in threads:
            await asyncio.to_thread(t.join)
        with self._lock:
            self._runners.clear()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        await asyncio.sleep(0)  # let the results the workers posted resolve

    async def __aenter__(self) -> GenerationEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def submit(self, loaded: LoadedGenerator, prompt: str, params: SamplingParams) -> Stream:
        """Queue a generation; raises ``Busy`` at once when the model's queue is full."""
        if self._loop is None or self._closing:
            raise RuntimeError("GenerationEngine is not running (use start() or async with)")
        encoded = loaded.vocab.encode(prompt)
        prime_ids = encoded.ids or _primer_ids(loaded)
        stream = Stream(prompt, encoded, prime_ids, params, self._waiting)
        with self._lock:
            runner = self._runners.get(id(loaded))
            if runner is None:
                runner = self._runners[id(loaded)] = _ModelRunner(self, loaded)
            runner.admit_or_raise(stream)
        return stream

    def queued_or_running(self, loaded: LoadedGenerator) -> int:
        """Streams of ``loaded`` in its batch or its queue right now."""
        with self._lock:
            runner = self._runners.get(id(loaded))
            return runner.admitted if runner else 0

    # ----- called from worker threads --------------------------------------------------------

    def _notify(self, now: float | None = None) -> None:
        """Wake blocked consumers soon: at most one wake-up in flight, and (given ``now``) not
        more often than every WAKE_INTERVAL_S — each wake-up costs the stepping thread the GIL."""
        if self._wake_scheduled or self._loop is None:
            return
        if now is not None:
            if now - self._last_wake < WAKE_INTERVAL_S:
                return
            self._last_wake = now
        self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to wake
            self._loop.call_soon_threadsafe(self._wake_waiters)

    def _wake_waiters(self) -> None:
        self._wake_scheduled = False  # reset first: characters added after this schedule a new wake
        waiting = list(self._waiting)
        self._waiting.clear()
        for stream in waiting:
            stream._wake()

    def _retire(self, runner: _ModelRunner) -> bool:
        """Unregister an idle runner (True), or keep it when work arrived meanwhile (False)."""
        with self._lock:
            if runner.pending or runner.rows_count or runner.reading_count:
                return False
            if self._runners.get(id(runner.loaded)) is runner:
                del self._runners[id(runner.loaded)]
            return True


def _primer_ids(loaded: LoadedGenerator) -> list[int]:
    """Ids of the card's primer, used when a prompt is empty (or nothing of it is known)."""
    ids = loaded.vocab.encode(loaded.card.sampling.prompt).ids
    if not ids:
        raise InvalidRequest("empty prompt, and this model has no usable primer: give a prompt")
    return ids


class _ModelRunner:
    """The batch of one loaded model and the worker thread that steps it."""

    def __init__(self, engine: GenerationEngine, loaded: LoadedGenerator) -> None:
        self.engine = engine
        self.loaded = loaded
        self.model = cast(StepModel, loaded.network)
        self.vocab: Vocab = loaded.vocab
        self.pending: deque[Stream] = deque()  # guarded by engine._lock
        self.cancels: list[Stream] = []  # guarded by engine._lock
        self.admitted = 0  # active + pending; guarded by engine._lock
        self.rows_count = 0  # active streams, written by the worker only
        self.step_s = 0.005  # moving average of one character's step, for Busy.retry_after and decode runs
        self.steps_timed = 0  # calls averaged into step_s so far
        self.thread = threading.Thread(target=self._run, name=f"genbot-model-{loaded.card.name}", daemon=True)
        paths = getattr(loaded.network, "serving_paths", None)
        self.min_rows = engine.min_rows if paths is None or engine.min_rows == 1 else paths.step_rows
        self._batch = _Batch(min_rows=self.min_rows)
        self.reads_batched = callable(getattr(loaded.network, "read", None))
        self.reading: list[_Reading] = []  # streams whose prompt is being read (worker only)
        self.reading_count = 0  # len(reading), read by _retire under the engine lock
        self.read_char_s = 0.0005  # moving estimate of one chunk character for one row
        self.decode_owed = 0.0  # seconds of decoding owed to running streams after a chunk

    def admit_or_raise(self, stream: Stream) -> None:
        """Queue ``stream`` (caller holds the engine lock) or raise ``Busy``."""
        e = self.engine
        if self.admitted >= e.max_streams + e.max_queue:
            raise Busy(f"model {self.loaded.card.name!r} is busy, retry later", retry_after=self._retry_after())
        self.admitted += 1
        self.pending.append(stream)
        stream._on_cancel = self._request_cancel
        if self.thread.ident is None:
            self.thread.start()

    def _request_cancel(self, stream: Stream) -> None:
        with self.engine._lock:
            self.cancels.append(stream)

    def _retry_after(self) -> float:
        rows = list(self._batch.rows)
        soonest = min((s._decode.remaining for s in rows), default=1)
        return round(min(30.0, max(0.5, soonest * self.step_s)), 1)

    # ----- worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        if torch.get_num_threads() != self.engine.torch_threads:
            torch.set_num_threads(self.engine.torch_threads)
        with torch.inference_mode():
            while True:
                try:
                    if not self._boundary():
                        return
                    if self.reading and (not self._batch.rows or self.decode_owed <= 0):
                        self._read_chunk()
                    elif self._batch.rows:
                        self._step()
                except Exception as e:  # a broken model fails its streams, never the thread
                    self._drain("error", f"{type(e).__name__}: {e}")

    def _boundary(self) -> bool:
        """Between steps: apply cancels, admit queued streams; False once the runner retires."""
        if self.engine._closing:
            self._drain("cancelled")
            return False
        if self.cancels:
            self._apply_cancels()
        if self.pending and len(self._batch.rows) + len(self.reading) < self.engine.max_streams:
            self._admit()
        return bool(self._batch.rows or self.reading) or not self.engine._retire(self)

    def _take_pending(self, n: int) -> list[Stream]:
        with self.engine._lock:
            return [self.pending.popleft() for _ in range(min(n, len(self.pending)))]

    def _admit(self) -> None:
        taken = self._take_pending(self.engine.max_streams - len(self._batch.rows) - len(self.reading))
        if self.reads_batched:
            now = time.perf_counter_ns()
            for stream in taken:
                stream._times.admitted = now
                self.reading.append(_Reading(stream))
            self.reading_count = len(self.reading)
            return
        joins = []
        for stream in taken:
            joined = self._prime(stream)
            if joined is not None:
                joins.append(joined)
        self._join(joins)

    def _join(self, joins: list[tuple[Stream, State, Tensor]]) -> None:
        if not joins:
            return
        try:
            self._batch.join(joins, self.vocab_size)
        except Exception as e:  # e.g. a state whose shape does not fit the batch
            for stream, _, _ in joins:
                self._finish(stream, "error", f"joining the batch failed: {type(e).__name__}: {e}")
        self.rows_count = len(self._batch.rows)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _read_prompt(self, ids: Tensor) -> tuple[Tensor, State]:
        """Last logits (1, V) and state after the prompt: the model's fast ``prime`` if it has one."""
        prime = getattr(self.model, "prime", None)
        if prime is not None:
            result: tuple[Tensor, State] = prime(ids)
            return result
        logits, state = self.model.forward(ids, self.model.initial_state(1))  # (1, T, V)
        return logits[:, -1], state

    def _prime(self, stream: Stream) -> tuple[Stream, State, Tensor] | None:
        """Run the prompt through ``forward`` alone and sample the first character."""
        t = stream._times
        t.admitted = time.perf_counter_ns()
        try:
            device = self._batch.device or self.model.initial_state(1)[0].device
            self._batch.device = device
            ids = torch.tensor([stream.prime_ids], device=device)  # (1, T)
            last, state = self._read_prompt(ids)  # (1, V)
            t.primed = time.perf_counter_ns()
            sampler = BatchSampler([stream.params], self.vocab_size, device)
            first = sampler(last, _uniforms([stream._decode.draw], device))  # (1,)
            ch = self.vocab.decode(first.tolist())
        except Exception as e:
            self._finish(stream, "error", f"priming failed: {type(e).__name__}: {e}")
            return None
        t.first_char = time.perf_counter_ns()
        if stream._decode.push(ch):
            self._finish(stream, stream._decode.reason or "length")
            return None
        self.engine._notify()
        return stream, state, first

    def _read_chunk(self) -> None:
        """Feed every stream being read the next chunk of its prompt, in one batched call.

        The chunk is as long as the shortest remaining prompt allows, and no longer than what
        fits in CHUNK_S (IDLE_CHUNK_S when nothing runs) at the measured cost per character.
        """
        group = self.reading
        t0 = time.perf_counter()
        budget = CHUNK_S if self._batch.rows else IDLE_CHUNK_S
        room = min(len(r.stream.prime_ids) - r.pos for r in group)
        length = max(1, min(room, int(budget / (self.read_char_s * len(group)))))
        model = cast(_ReadingModel, self.model)
        try:
            device = self._batch.device or self.model.initial_state(1)[0].device
            self._batch.device = device
            ids = torch.tensor([r.stream.prime_ids[r.pos : r.pos + length] for r in group], device=device)  # (B, T)
            fresh = model.initial_state(1)
            parts = [r.state or fresh for r in group]  # torch.cat promotes a zero state to the others' dtype
            state = tuple(torch.cat(layer, dim=1) for layer in zip(*parts, strict=True))  # (L, B, H)
            hidden, state = model.read(ids, state)  # (B, H), state in the reader's dtype
        except Exception as e:
            self._fail_reading(group, f"priming failed: {type(e).__name__}: {e}")
            return
        done: list[int] = []
        for i, r in enumerate(group):
            r.pos += length
            r.state = tuple(t[:, i : i + 1] for t in state)
            if r.pos >= len(r.stream.prime_ids):
                done.append(i)
        if done:
            self._first_chars([group[i] for i in done], hidden[done] if len(done) < len(group) else hidden, model)
            gone = set(done)
            self.reading = [r for i, r in enumerate(group) if i not in gone]
            self.reading_count = len(self.reading)
        elapsed = time.perf_counter() - t0
        self.read_char_s += 0.3 * (elapsed / (length * len(group)) - self.read_char_s)
        self.decode_owed = elapsed * (1 - READ_SHARE) / READ_SHARE if self._batch.rows else 0.0

    def _first_chars(self, finished: list[_Reading], hidden: Tensor, model: _ReadingModel) -> None:
        """Sample the first character of streams whose prompt was just read; join them to the batch."""
        device = hidden.device
        streams = [r.stream for r in finished]
        try:
            state = tuple(
                torch.cat(layer, dim=1) for layer in zip(*(cast(State, r.state) for r in finished), strict=True)
            )
            last, state = model.read_end(hidden, state)  # (n, V), serving state
            primed = time.perf_counter_ns()
            sampler = BatchSampler([s.params for s in streams], self.vocab_size, device)
            first = sampler(last, _uniforms([s._decode.draw for s in streams], device))  # (n,)
            chars = self.vocab.decode(first.tolist())
        except Exception as e:
            self._fail_reading(finished, f"priming failed: {type(e).__name__}: {e}")
            return
        now = time.perf_counter_ns()
        joins = []
        for i, (stream, ch) in enumerate(zip(streams, chars, strict=True)):
            stream._times.primed, stream._times.first_char = primed, now
            if stream._decode.push(ch):
                self._finish(stream, stream._decode.reason or "length")
            else:
                joins.append((stream, tuple(t[:, i : i + 1] for t in state), first[i : i + 1]))
        self.engine._notify()
        self._join(joins)

    def _fail_reading(self, group: list[_Reading], error: str) -> None:
        gone = {id(r) for r in group}
        self.reading = [r for r in self.reading if id(r) not in gone]
        self.reading_count = len(self.reading)
        for r in group:
            self._finish(r.stream, "error", error)

    def _step(self) -> None:
        """Characters for every active stream: one batched step and one sample, or (native step
        paths) a run of steps with their sampling in one call; one tolist() either way."""
        b = self._batch
        assert b.sampler is not None  # the batch has rows
        t0 = time.perf_counter()
        n = len(b.rows)
        steps = self._native_steps(n)
        if steps:
            uniforms = _uniform_runs(b.draws, steps, b.device)  # (B, S)
            out, state = cast(_DecodingModel, self.model).decode(b.ids, b.state, b.sampler.native(), uniforms)
            nxt = out[:, -1]  # (B,)
            texts: list[str] | str = [self.vocab.decode(row) for row in out.tolist()]
        else:
            logits, state = self.model.step(b.ids, b.state)  # (W, V), W = max(B, min_rows)
            nxt = b.sampler(logits if n >= b.min_rows else logits[:n], _uniforms(b.draws, b.device))  # (B,)
            texts = self.vocab.decode(nxt.tolist())  # one character per stream
        b.advance(state, nxt)
        done = [i for i, (d, text) in enumerate(zip(b.decodes, texts, strict=True)) if _push_all(d, text)]
        now = time.perf_counter()
        self.engine._notify(now)
        if done:
            self._remove(done, None)
        # the plain mean of the first calls, then a moving average: a new runner's first guess
        # (5 ms) is gone after one call, not after the dozens a slow average would take
        self.steps_timed += 1
        self.step_s += max(0.05, 1 / self.steps_timed) * ((now - t0) / max(1, steps) - self.step_s)
        self.decode_owed -= now - t0

    def _native_steps(self, rows: int) -> int:
        """Characters the next native decode call runs (about DECODE_CALL_S); 0: step in Python."""
        decodes = getattr(self.model, "decodes_natively", None)
        if decodes is None or rows < self._batch.min_rows or not decodes(rows):
            return 0  # (a padded batch steps in Python: the kernels never need padding)
        longest = max(d.remaining for d in self._batch.decodes)  # no call runs past every stream's end
        return max(1, min(MAX_DECODE_STEPS, longest, int(DECODE_CALL_S / max(self.step_s, 1e-6))))

    def _apply_cancels(self) -> None:
        with self.engine._lock:
            cancels, self.cancels = self.cancels, []
            queued = [s for s in cancels if s in self.pending]
            for s in queued:
                self.pending.remove(s)
        for s in queued:
            self._finish(s, "cancelled")
        reading = [r for r in self.reading if r.stream in cancels]
        if reading:
            self.reading = [r for r in self.reading if r.stream not in cancels]
            self.reading_count = len(self.reading)
            for r in reading:
                self._finish(r.stream, "cancelled")
        rows = [i for i, s in enumerate(self._batch.rows) if s in cancels]
        if rows:
            self._remove(rows, "cancelled")

    def _remove(self, indices: list[int], reason: DoneReason | None) -> None:
        """Drop rows from the batch and finish their streams (with their own reason if None)."""
        gone = self._batch.drop(indices, self.vocab_size)
        self.rows_count = len(self._batch.rows)
        for s in gone:
            self._finish(s, reason or s._decode.reason or "length")

    def _drain(self, reason: DoneReason, error: str | None = None) -> None:
        """Finish every active stream (and on close every queued one): after a failed step, on close."""
        queued: list[Stream] = []
        if reason == "cancelled":
            with self.engine._lock:
                queued = list(self.pending)
                self.pending.clear()
        # No tensor ops here: after a failed step the state may be bad.
        gone, self._batch = self._batch.rows, _Batch(self._batch.device, self.min_rows)
        reading, self.reading = [r.stream for r in self.reading], []
        self.rows_count = self.reading_count = 0
        for s in gone + reading + queued:
            self._finish(s, reason, error)

    def _finish(self, stream: Stream, reason: DoneReason, error: str | None = None) -> None:
        with self.engine._lock:
            self.admitted -= 1
        stream._finish(reason, error)


class _ReadingModel(Protocol):
    """A model that reads prompts in batched chunks (``CharRNN.read``/``read_end``)."""

    def initial_state(self, batch: int) -> State: ...

    def read(self, ids: Tensor, state: State) -> tuple[Tensor, State]: ...

    def read_end(self, h: Tensor, state: State) -> tuple[Tensor, State]: ...


class _DecodingModel(Protocol):
    """A model whose native step path also samples (``CharRNN.decode``)."""

    def decode(self, ids: Tensor, state: State, sampling: NativeSampling, uniforms: Tensor) -> tuple[Tensor, State]: ...


def _push_all(decode: DecodeState, text: str) -> bool:
    """Push one stream's new characters; True once it is finished (what follows is dropped)."""
    return any(decode.push(ch) for ch in text)


class _Reading:
    """A stream whose prompt is being read: how far, and the state so far (None: not started)."""

    __slots__ = ("pos", "state", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.pos = 0
        self.state: State | None = None


def _uniform_runs(draws: list[Callable[[int], int]], steps: int, device: torch.device | None) -> Tensor:
    """Each stream's next ``steps`` uniforms in [0, 1) (B, S), from that stream's own generator:
    the same draws, in the same order, whether taken one a step or a run at a time."""
    rows = [[d(UNIFORM_BITS) * UNIFORM_SCALE for _ in range(steps)] for d in draws]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def _uniforms(draws: list[Callable[[int], int]], device: torch.device | None) -> Tensor:
    """One uniform per stream (B,)."""
    return _uniform_runs(draws, 1, device).view(-1)


class _Batch:
    """Rows of the running batch: streams, their state and next input ids, kept aligned."""

    def __init__(self, device: torch.device | None = None, min_rows: int = MIN_ROWS) -> None:
        self.min_rows = min_rows  # fewer rows are padded to this many (see MIN_ROWS)
        self.rows: list[Stream] = []
        self.decodes: list[DecodeState] = []  # each row's output bookkeeping, in row order
        self.draws: list[Callable[[int], int]] = []  # each row's uniform source, in row order
        self.state: State = ()
        self.ids = torch.zeros(0, dtype=torch.long, device=device)  # (W,) next input per row, padding included
        self.sampler: BatchSampler | None = None
        self.device = device

    def join(self, joins: list[tuple[Stream, State, Tensor]], vocab_size: int) -> None:
        """Append primed streams: their states along dim 1, their first chars as next inputs."""
        n = len(self.rows)
        kept = tuple(t[:, :n] for t in self.state)  # (L, B, H) without padding rows
        states = [kept, *(st for _, st, _ in joins)] if n else [st for _, st, _ in joins]
        self.state = tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))  # (L, B', H)
        firsts = [first for _, _, first in joins]
        self.ids = torch.cat([self.ids[:n], *firsts] if n else firsts)  # (B',)
        self.rows += [s for s, _, _ in joins]
        self._refresh(vocab_size)

    def drop(self, indices: list[int], vocab_size: int) -> list[Stream]:
        """Remove rows; returns their streams."""
        gone_set = set(indices)
        gone = [s for i, s in enumerate(self.rows) if i in gone_set]
        keep = [i for i in range(len(self.rows)) if i not in gone_set]
        self.rows = [self.rows[i] for i in keep]
        if keep:
            index = torch.tensor(keep, device=self.ids.device)
            self.state = tuple(t.index_select(1, index) for t in self.state)  # (L, B', H)
            self.ids = self.ids.index_select(0, index)  # (B',)
        else:
            self.state, self.ids = (), self.ids[:0]
        self._refresh(vocab_size)
        return gone

    def advance(self, state: State, nxt: Tensor) -> None:
        """Take the step's new state and the sampled ids as the next inputs."""
        self.state = state
        self.ids = pad_rows(nxt, self.min_rows)  # (W,)

    def _refresh(self, vocab_size: int) -> None:
        """Re-derive per-row tensors after the membership changed; pad fewer rows to min_rows."""
        self.decodes = [s._decode for s in self.rows]
        self.draws = [d.draw for d in self.decodes]
        if not self.rows:
            self.sampler = None
            return
        self.sampler = BatchSampler([s.params for s in self.rows], vocab_size, self.ids.device)
        n = len(self.rows)
        if n < self.min_rows:
            # (L, n, H) -> (L, min_rows, H): the copy rows only keep BLAS on its batched kernel
            self.state = tuple(pad_rows(t[:, :n], self.min_rows, dim=1) for t in self.state)
            self.ids = pad_rows(self.ids[:n], self.min_rows)

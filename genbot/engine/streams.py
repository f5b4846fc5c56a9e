"""One generation as seen from both sides: the worker thread appends characters, an asyncio
consumer reads them as text chunks.

Hand-off without per-character tasks or locks: the worker appends to a list and then advances
``_visible``; the consumer only reads ``_chars[:_visible]``. Both are single operations under the
GIL, and the list only grows, so a reader never sees a half-written state. The engine wakes
waiting consumers at most once per step (one ``call_soon_threadsafe`` for all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from genbot.engine.sampling import SamplingParams
from genbot.networks.vocab import Encoded

DoneReason = Literal["length", "stop", "cancelled", "error"]


@dataclass(frozen=True)
class GenerationStats:
    """Final figures of one stream, in Ollama's ``/api/generate`` shape (durations in ns)."""

    done_reason: DoneReason
    eval_count: int  # characters generated (a matched stop string included)
    prompt_eval_count: int  # characters fed to prime the model
    total_duration: int  # submit → done
    prompt_eval_duration: int  # priming the prompt through ``forward``
    eval_duration: int  # primed → done
    queue_duration: int  # submit → a batch slot was free
    first_char_duration: int  # submit → first character (time to first char)
    chars_per_s: float  # eval_count / eval_duration
    error: str | None = None  # what went wrong when done_reason is "error"
    load_duration: int = 0  # models are loaded before they serve
    done: bool = True

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON and database rows."""
        return asdict(self)


class Stream:
    """A running generation: async iterator of text chunks, cancel(), await result()."""

    def __init__(
        self,
        prompt: str,
        encoded: Encoded,
        prime_ids: list[int],
        params: SamplingParams,
        waiting: set[Stream],
    ) -> None:
        self.prompt = prompt
        self.encoded = encoded  # the prompt under the vocabulary's unknown-char policy
        self.params = params.with_seed()
        assert self.params.seed is not None
        self.seed: int = self.params.seed  # effective seed, to store with the generation
        self.prime_ids = prime_ids  # what primes the model: the encoded prompt, or the card's primer
        self.stats: GenerationStats | None = None  # set once the stream is done
        self._waiting = waiting  # the engine's set of blocked consumers, woken once per step
        self._on_cancel: Callable[[Stream], None] | None = None  # set by the engine on admission
        self._loop = asyncio.get_running_loop()
        self._result: asyncio.Future[GenerationStats] = self._loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._read = 0  # consumer side: characters already handed out
        self._decode = DecodeState(self.params)
        self._times = _Times(submitted=time.perf_counter_ns())
        self._cancel_requested = False

    # ----- consumer side (event loop thread) -------------------------------------------------

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> str:
        """The characters produced since the last read; ends when the stream is done."""
        while True:
            done = self.stats is not None  # read before _visible: both are final once done is set
            end = self._decode.visible
            if end > self._read:
                chunk = "".join(self._decode.chars[self._read : end])
                self._read = end
                return chunk
            if done:
                raise StopAsyncIteration
            await self._wait()

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        self._waiting.add(self)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def cancel(self) -> None:
        """Stop generating; the stream leaves its batch at the next step boundary."""
        if self.stats is None and not self._cancel_requested and self._on_cancel is not None:
            self._cancel_requested = True
            self._on_cancel(self)

    async def finished_within(self, timeout: float) -> bool:
        """Wait until the stream is done or ``timeout`` seconds pass, whichever comes first; whether it is done."""
        if not self._result.done():
            await asyncio.wait((self._result,), timeout=timeout)
        return self._result.done()

    async def result(self) -> GenerationStats:
        """Final statistics, once the stream is done (the output stays in ``output``)."""
        return await asyncio.shield(self._result)

    @property
    def output(self) -> str:
        """The text generated so far (a stop string is never part of it)."""
        return "".join(self._decode.chars[: self._decode.visible])

    @property
    def done(self) -> bool:
        """Whether the stream has finished, for any reason."""
        return self.stats is not None

    # ----- worker side (model thread) --------------------------------------------------------

    def _finish(self, reason: DoneReason, error: str | None = None) -> None:
        """Freeze the output and statistics, then resolve ``result()`` on the event loop."""
        d = self._decode
        d.release()
        self.stats = self._times.stats(reason, d.generated, len(self.prime_ids), error)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self._result.done() and self.stats is not None:
            self._result.set_result(self.stats)
        self._wake()


class DecodeState:
    """Output characters and the stop-string/length bookkeeping of one stream."""

    def __init__(self, params: SamplingParams) -> None:
        self.chars: list[str] = []
        self.visible = 0  # chars[:visible] may be shown; the rest could still become a stop string
        self.generated = 0
        self.remaining = params.max_length
        self.stops = params.stop
        self.tail = ""  # the last few characters, for the stop check
        self.tail_len = max((len(s) for s in self.stops), default=0)
        self.prefixes = {s[:i] for s in self.stops for i in range(1, len(s))}
        self.reason: DoneReason | None = None
        rng = random.Random(params.seed)
        self.draw: Callable[[int], int] = rng.getrandbits  # one call per character

    def push(self, ch: str) -> bool:
        """Add one generated character; True when the stream is finished."""
        self.chars.append(ch)
        self.generated += 1
        self.remaining -= 1
        if self.stops:
            return self._push_with_stops() or self._out_of_length()
        self.visible += 1
        return self._out_of_length()

    def _out_of_length(self) -> bool:
        if self.remaining > 0:
            return False
        self.reason = "length"
        return True

    def _push_with_stops(self) -> bool:
        self.tail = (self.tail + self.chars[-1])[-self.tail_len :]
        for s in self.stops:
            if self.tail.endswith(s):
                self.reason = "stop"
                self.visible = len(self.chars) - len(s)
                return True
        self.visible = len(self.chars) - self._held()
        return False

    def _held(self) -> int:
        """Length of the longest tail that could still grow into a stop string."""
        tail = self.tail
        for k in range(min(len(tail), self.tail_len - 1), 0, -1):
            if tail[-k:] in self.prefixes:
                return k
        return 0

    def release(self) -> None:
        """Settle the visible text at the end: held-back characters show unless a stop matched."""
        if self.reason != "stop":
            self.visible = len(self.chars)


@dataclass
class _Times:
    """perf_counter_ns stamps of one stream's life."""

    submitted: int
    admitted: int = 0
    primed: int = 0
    first_char: int = 0

    def stats(self, reason: DoneReason, generated: int, prompt_chars: int, error: str | None) -> GenerationStats:
        """Durations from the stamps, ending now."""
        end = time.perf_counter_ns()
        admitted = self.admitted or end
        primed = self.primed or end
        eval_ns = end - primed
        return GenerationStats(
            done_reason=reason,
            eval_count=generated,
            prompt_eval_count=prompt_chars,
            total_duration=end - self.submitted,
            prompt_eval_duration=primed - admitted,
            eval_duration=eval_ns,
            queue_duration=admitted - self.submitted,
            first_char_duration=(self.first_char or end) - self.submitted,
            chars_per_s=round(generated * 1e9 / eval_ns, 1) if eval_ns > 0 else 0.0,
            error=error,
        )

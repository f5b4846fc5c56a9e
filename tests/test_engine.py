"""GenerationEngine with real tiny CharRNNs (random weights) and the shipped scripted fake."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from genbot.engine.batching import GenerationEngine
from genbot.engine.sampling import SamplingParams
from genbot.engine.streams import GenerationStats, Stream
from genbot.errors import Busy, InvalidRequest
from genbot.networks import native
from genbot.networks.charrnn import CharRNN, ServingPaths
from genbot.networks.checkpoint import LoadedGenerator
from genbot.testing import RecordingModel, loaded_generator, scripted_model, tiny_charrnn

CHARS = "abcdefghijklmnopqrstuvwxyz .,;:!?'\"\n"


@pytest.fixture
async def engine() -> AsyncIterator[GenerationEngine]:
    async with GenerationEngine(max_streams_per_model=64, max_queue=8) as e:
        yield e


@pytest.fixture(scope="module")
def tiny() -> LoadedGenerator:
    return tiny_charrnn(CHARS, seed=3)


def recorded(lm: LoadedGenerator, step_delay: float = 0.0) -> tuple[LoadedGenerator, RecordingModel]:
    """The same weights behind a RecordingModel, as a separate loaded model."""
    rec = RecordingModel(lm.network, step_delay=step_delay)
    return loaded_generator(rec, lm.vocab, name="recorded"), rec


async def collect(stream: Stream) -> tuple[str, GenerationStats, list[str]]:
    chunks = [c async for c in stream]
    return "".join(chunks), await stream.result(), chunks


async def generate(engine: GenerationEngine, lm: LoadedGenerator, prompt: str = "the ", **kw: object) -> str:
    text, stats, _ = await collect(engine.submit(lm, prompt, SamplingParams(**kw)))  # type: ignore[arg-type]
    assert stats.done_reason in ("length", "stop")
    return text


async def test_seeded_generation_is_reproducible(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    a = await generate(engine, tiny, seed=11, max_length=80)
    b = await generate(engine, tiny, seed=11, max_length=80)
    c = await generate(engine, tiny, seed=12, max_length=80)
    assert a == b and len(a) == 80
    assert a != c


async def test_unseeded_stream_reports_a_seed_that_reproduces_it(
    engine: GenerationEngine, tiny: LoadedGenerator
) -> None:
    first = engine.submit(tiny, "to be", SamplingParams(max_length=60))
    text, _, _ = await collect(first)
    assert await generate(engine, tiny, "to be", seed=first.seed, max_length=60) == text


@pytest.mark.parametrize("cell", ["lstm", "gru"])
async def test_same_seed_alone_or_in_a_batch_of_64_gives_the_same_text(engine: GenerationEngine, cell: str) -> None:
    lm, rec = recorded(tiny_charrnn(CHARS, cell=cell, seed=5))  # type: ignore[arg-type]
    probes = [
        ("to be or ", SamplingParams(seed=s, max_length=60, temperature=[0.7, 1.0, 1.4][s % 3], top_k=[0, 0, 8][s % 3]))
        for s in range(20)
    ] + [("the ", SamplingParams(seed=99, max_length=60, top_p=0.8))]
    alone = [await generate(engine, lm, p, **vars(params)) for p, params in probes]
    assert min(rec.batch_sizes) == 2  # a lone stream runs padded, on BLAS's batched path
    # 43 other streams with other prompts, lengths and settings, joining in two waves
    others = [engine.submit(lm, "x" * (i % 7), SamplingParams(seed=1000 + i, max_length=20 + i)) for i in range(23)]
    batched = [engine.submit(lm, p, params) for p, params in probes]
    await anext(batched[0])  # the first wave is stepping
    others += [engine.submit(lm, "why?", SamplingParams(temperature=0, max_length=30 + i)) for i in range(20)]
    await asyncio.gather(*(collect(s) for s in batched + others))
    assert [s.output for s in batched] == alone
    assert max(rec.batch_sizes) == 64


async def test_temperature_zero_is_the_argmax_and_deterministic(
    engine: GenerationEngine, tiny: LoadedGenerator
) -> None:
    prompt = "the quick "
    text = await generate(engine, tiny, prompt, temperature=0, max_length=40)
    assert await generate(engine, tiny, prompt, temperature=0, max_length=40, seed=4) == text
    ids = torch.tensor([tiny.vocab.encode(prompt + text).ids])
    with torch.inference_mode():
        logits, _ = tiny.network.forward(ids[:, :-1], tiny.network.initial_state(1))  # (1, T-1, V)
    chosen = logits[0, len(prompt) - 1 :].gather(1, ids[0, len(prompt) :, None])[:, 0]  # (40,)
    assert torch.allclose(chosen, logits[0, len(prompt) - 1 :].amax(-1), atol=1e-4)


async def test_top_k_1_and_tiny_top_p_equal_argmax(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    greedy = await generate(engine, tiny, temperature=0, max_length=50)
    assert await generate(engine, tiny, temperature=1.5, top_k=1, seed=3, max_length=50) == greedy
    assert await generate(engine, tiny, temperature=1.5, top_p=1e-6, seed=3, max_length=50) == greedy


async def test_stop_string_ends_generation_and_is_not_shown(engine: GenerationEngine) -> None:
    lm = scripted_model("hello world. ")
    text, stats, chunks = await collect(engine.submit(lm, "", SamplingParams(max_length=100, stop=("o w", "xyz"))))
    assert text == "hell" and "".join(chunks) == text
    assert stats.done_reason == "stop" and stats.eval_count == 7


async def test_a_partial_stop_match_is_released_when_length_runs_out(engine: GenerationEngine) -> None:
    lm = scripted_model("abcabc")
    s = engine.submit(lm, "", SamplingParams(max_length=5, stop=("abd",)))
    text, stats, _ = await collect(s)
    assert text == s.output == "abcab" and stats.done_reason == "length"


async def test_max_length_is_respected(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    for n in (1, 2, 37):
        s = engine.submit(tiny, "a", SamplingParams(max_length=n))
        text, stats, _ = await collect(s)
        assert len(text) == stats.eval_count == n and stats.done_reason == "length"


async def test_stats_have_ollamas_shape(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    _, stats, _ = await collect(engine.submit(tiny, "abc", SamplingParams(max_length=10)))
    d = stats.to_dict()
    assert d["done"] is True and d["done_reason"] == "length" and d["load_duration"] == 0
    assert d["eval_count"] == 10 and d["prompt_eval_count"] == 3
    assert 0 < stats.first_char_duration <= stats.total_duration
    assert stats.prompt_eval_duration > 0 and stats.eval_duration > 0 and stats.chars_per_s > 0


async def test_cancel_removes_the_stream_from_the_batch_and_keeps_its_output(
    engine: GenerationEngine, tiny: LoadedGenerator
) -> None:
    lm, rec = recorded(tiny, step_delay=0.002)
    keep = [engine.submit(lm, "a", SamplingParams(max_length=60)) for _ in range(2)]
    victim = engine.submit(lm, "b", SamplingParams(max_length=1000))
    seen = ""
    async for chunk in victim:
        seen += chunk
        if len(seen) >= 5:
            break
    steps_at_cancel = len(rec.batch_sizes)
    victim.cancel()
    stats = await victim.result()
    await asyncio.gather(*(s.result() for s in keep))
    assert stats.done_reason == "cancelled"
    assert victim.output.startswith(seen) and len(victim.output) < 1000
    assert 3 in rec.batch_sizes[:steps_at_cancel]
    after = rec.batch_sizes[steps_at_cancel:]
    assert after.count(3) <= 1 and set(after[1:]) == {2}  # gone from the batch at the next boundary


async def test_a_reader_pausing_between_chunks_learns_of_the_end_when_it_comes(
    engine: GenerationEngine, tiny: LoadedGenerator
) -> None:
    """What the HTTP API does between SSE events: wait a while for more text, but not past the end."""
    lm, _ = recorded(tiny, step_delay=0.002)
    stream = engine.submit(lm, "a", SamplingParams(max_length=100_000))
    assert await anext(stream)
    assert not await stream.finished_within(0.01)  # running: the whole wait, then False
    stream.cancel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await stream.finished_within(60.0)
    assert loop.time() - started < 10.0  # at the end, not after the minute
    assert await stream.finished_within(60.0)  # done: at once


async def test_busy_past_slots_and_queue_and_queued_streams_start_later(tiny: LoadedGenerator) -> None:
    lm, rec = recorded(tiny, step_delay=0.002)
    async with GenerationEngine(max_streams_per_model=1, max_queue=1) as engine:
        first = engine.submit(lm, "a", SamplingParams(max_length=15))
        queued = engine.submit(lm, "b", SamplingParams(max_length=15))
        with pytest.raises(Busy, match="busy") as err:
            engine.submit(lm, "c", SamplingParams(max_length=15))
        assert err.value.retry_after > 0
        (_, s1, _), (text2, s2, _) = await asyncio.gather(collect(first), collect(queued))
    assert len(text2) == 15 and s2.done_reason == "length"
    assert s2.queue_duration >= s1.eval_duration * 0.9  # waited for the first to finish
    assert max(rec.batch_sizes) == 2  # one stream (padded to two rows) at a time


async def test_cancelled_queued_stream_never_runs(tiny: LoadedGenerator) -> None:
    lm, rec = recorded(tiny, step_delay=0.002)
    async with GenerationEngine(max_streams_per_model=1, max_queue=2) as engine:
        first = engine.submit(lm, "a", SamplingParams(max_length=20))
        queued = engine.submit(lm, "b", SamplingParams(max_length=20))
        queued.cancel()
        assert (await queued.result()).done_reason == "cancelled" and queued.output == ""
        await first.result()
    assert rec.primed == [1]


async def test_unknown_prompt_chars_are_reported(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    s = engine.submit(tiny, "caf\u00e9 \u201cq\u201d \u20ac5", SamplingParams(max_length=5))
    await collect(s)
    assert s.encoded.mapped == {"\u00e9": "e", "\u201c": '"', "\u201d": '"'}
    assert s.encoded.dropped == ["\u20ac", "5"]
    assert (await s.result()).prompt_eval_count == len('cafe "q" ')


async def test_empty_prompt_primes_with_the_cards_primer(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    lm, rec = recorded(tiny)
    text, stats, _ = await collect(engine.submit(lm, "", SamplingParams(max_length=5)))
    assert len(text) == 5 and rec.primed == [len(tiny.card.sampling.prompt)]
    assert stats.prompt_eval_count == len(tiny.card.sampling.prompt)


async def test_empty_prompt_without_a_usable_primer_is_invalid(engine: GenerationEngine) -> None:
    lm = scripted_model("abc", extra_chars="")  # no "\n" in the vocabulary
    with pytest.raises(InvalidRequest, match="primer"):
        engine.submit(lm, "", SamplingParams())


async def test_failing_step_ends_streams_with_error_and_the_engine_goes_on(
    engine: GenerationEngine, tiny: LoadedGenerator
) -> None:
    lm, rec = recorded(tiny, step_delay=0.001)
    s = engine.submit(lm, "a", SamplingParams(max_length=500))
    async for _ in s:
        rec.fail_steps = 1
        break
    _, stats, _ = await collect(s)
    assert stats.done_reason == "error" and "injected step failure" in (stats.error or "")
    assert 0 < len(s.output) < 500
    assert len(await generate(engine, lm, max_length=20)) == 20


async def test_a_failing_prompt_fails_only_its_own_stream(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    lm, rec = recorded(tiny, step_delay=0.001)
    healthy = engine.submit(lm, "a", SamplingParams(max_length=30))
    await anext(healthy)
    rec.fail_primes = 1
    broken = engine.submit(lm, "b", SamplingParams(max_length=30))
    assert (await broken.result()).error == "priming failed: RuntimeError: injected priming failure"
    _, stats, _ = await collect(healthy)
    assert stats.done_reason == "length" and len(healthy.output) == 30


async def test_stepping_never_runs_on_the_event_loop_thread(engine: GenerationEngine, tiny: LoadedGenerator) -> None:
    lm, rec = recorded(tiny)
    await asyncio.gather(*(generate(engine, lm, max_length=10) for _ in range(3)))
    assert rec.threads and threading.get_ident() not in rec.threads


async def test_a_reader_that_stops_reading_does_not_block_others(
    engine: GenerationEngine, tiny: LoadedGenerator
) -> None:
    stalled = engine.submit(tiny, "a", SamplingParams(max_length=300))
    assert len(await generate(engine, tiny, max_length=200)) == 200
    stats = await stalled.result()  # finished although nobody read it
    assert stats.done_reason == "length" and len(stalled.output) == 300


async def test_close_cancels_running_streams(tiny: LoadedGenerator) -> None:
    lm, _ = recorded(tiny, step_delay=0.002)
    engine = GenerationEngine(max_streams_per_model=4, max_queue=4)
    await engine.start()
    s = engine.submit(lm, "a", SamplingParams(max_length=10_000))
    await asyncio.sleep(0.02)
    await engine.close()
    assert (await s.result()).done_reason == "cancelled"
    with pytest.raises(RuntimeError):
        engine.submit(lm, "a", SamplingParams())


async def test_lone_streams_are_padded_only_when_batch_invariance_is_on(tiny: LoadedGenerator) -> None:
    for invariant, rows in ((True, 2), (False, 1)):
        lm, rec = recorded(tiny)
        async with GenerationEngine(max_streams_per_model=4, max_queue=0, batch_invariant=invariant) as e:
            text = await generate(e, lm, max_length=12, seed=5)
        assert len(text) == 12
        assert set(rec.batch_sizes) == {rows}


async def test_a_path_exact_only_from_four_rows_pads_every_smaller_batch_and_keeps_each_seeds_text(
    tiny: LoadedGenerator,
) -> None:
    seeds = [SamplingParams(seed=s, max_length=25, temperature=1.0) for s in range(3)]
    # rowwise is exact on any CPU, so padding (or not) must not change a single character
    tiny.network.use_paths(ServingPaths(prime="steps", step="rowwise", prime_rows=1, step_rows=1))
    async with GenerationEngine(max_streams_per_model=4, max_queue=4) as e:
        unpadded = [await generate(e, tiny, "to be", **vars(p)) for p in seeds]
    tiny.network.use_paths(ServingPaths(prime="steps", step="rowwise", prime_rows=4, step_rows=4))
    lm, rec = recorded(tiny)
    async with GenerationEngine(max_streams_per_model=4, max_queue=4) as e:
        alone = [await generate(e, lm, "to be", **vars(p)) for p in seeds]
        together = await asyncio.gather(*(collect(e.submit(lm, "to be", p)) for p in seeds))
    assert alone == unpadded == [text for text, _, _ in together]
    assert set(rec.batch_sizes) == {4}  # one, two or three streams: always stepped as four rows


async def test_prompts_are_read_by_charrnn_prime_through_the_recording_fake(
    engine: GenerationEngine, tiny: LoadedGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, tuple[int, ...]]] = []
    real_prime, real_forward = CharRNN.prime, CharRNN.forward

    def prime(self: CharRNN, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        calls.append(("prime", tuple(ids.shape)))
        return real_prime(self, ids)

    def forward(self: CharRNN, ids: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        calls.append(("forward", tuple(ids.shape)))
        return real_forward(self, ids, state)  # type: ignore[arg-type]

    monkeypatch.setattr(CharRNN, "prime", prime)
    monkeypatch.setattr(CharRNN, "forward", forward)
    lm, rec = recorded(tiny)
    wrapped = await generate(engine, lm, "to be", seed=5, max_length=30)
    plain = await generate(engine, tiny, "to be", seed=5, max_length=30)
    # the fake (no batched reader) primes alone; a CharRNN is read by the batched prefill; never forward
    assert calls == [("prime", (1, 5))]
    assert rec.primed == [5] and rec.forwarded == []
    assert wrapped == plain  # the fake changes nothing about what the production path writes


async def test_the_scripted_fake_reads_prompts_like_a_charrnn(engine: GenerationEngine) -> None:
    lm = scripted_model("hello world ")
    logits, state = lm.network.prime(torch.tensor([lm.vocab.encode("hi there").ids]))
    assert logits.shape == (1, len(lm.vocab)) and state[0].shape == (1, 1, 1)  # like CharRNN.prime
    assert await generate(engine, lm, "whatever", max_length=15) == "hello world hel"


def _engine_paths() -> list[tuple[str, str]]:
    from genbot.networks.charrnn import bf16_step_available, fp16_available, onednn_available

    # rowwise_fp16: each row alone through FBGEMM float16, exact on any CPU
    fp16 = [("fp16", "fp16"), ("steps", "rowwise_fp16")] if fp16_available() else []
    onednn = [("onednn", "onednn")] if onednn_available() else []
    bf16 = [("steps", "bf16")] if bf16_step_available() else []
    lib = native.library()
    kernels = (["native", "native_fp16"] if lib.has_fp16 else ["native"]) if lib is not None else []
    return [("fp32", "fp32"), *fp16, *onednn, *bf16, *((p, p) for p in kernels), *(("fp32", p) for p in kernels)]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(("prime", "step"), _engine_paths())
async def test_batched_chunked_prefill_gives_each_seed_the_text_it_gets_alone(
    cell: str, prime: str, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genbot.engine import batching
    from genbot.engine.paths import measure

    lm = tiny_charrnn(CHARS, cell=cell, seed=11)  # type: ignore[arg-type]
    with torch.inference_mode():
        paths = measure(lm.network, prime, step)  # type: ignore[arg-type]
    if "not batch-invariant" in paths.reason:  # exact mode would never choose it here
        pytest.skip(f"{prime}/{step} rows disagree across batch sizes on this CPU: {paths.reason}")
    lm.network.use_paths(paths)
    reads: list[tuple[int, int]] = []
    real_read = CharRNN.read

    def read(self: CharRNN, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        reads.append((ids.shape[0], ids.shape[1]))
        return real_read(self, ids, state)  # type: ignore[return-value]

    monkeypatch.setattr(CharRNN, "read", read)
    probes = [("to be or not " * (1 + s % 4))[: 3 + 5 * s] for s in range(12)]
    params = [SamplingParams(seed=s, max_length=40, temperature=[0.7, 1.0, 1.3][s % 3]) for s in range(12)]
    async with GenerationEngine(max_streams_per_model=64, max_queue=64) as e:
        alone = [await generate(e, lm, p, **vars(q)) for p, q in zip(probes, params, strict=True)]
    assert all(b == 1 for b, _ in reads)  # one at a time: each prompt read alone, in one call
    reads.clear()
    # Now 1-character chunks, read in batches while another stream is running.
    monkeypatch.setattr(batching, "CHUNK_S", 1e-9)
    monkeypatch.setattr(batching, "IDLE_CHUNK_S", 1e-9)
    async with GenerationEngine(max_streams_per_model=64, max_queue=64) as e:
        running = e.submit(lm, "xyz", SamplingParams(seed=500, max_length=2000))
        await anext(running)
        batched = [e.submit(lm, p, q) for p, q in zip(probes, params, strict=True)]
        results = await asyncio.gather(*(collect(s) for s in batched))
        running.cancel()
        await running.result()
    assert [text for text, _, _ in results] == alone
    assert max(b for b, _ in reads) > 1 and max(t for _, t in reads) == 1  # batched, in 1-char chunks
    assert len(running.output) > 60  # the running stream kept stepping while the prompts were read


async def test_fast_mode_moves_a_prompt_between_the_lone_and_the_batched_reader_as_its_group_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``prime_lone``: chunks read alone go through one reader, chunks read with others through
    another, and a prompt may start in one and end in the other; every stream still completes."""
    from genbot.engine import batching

    if native.library() is None:
        pytest.skip(f"needs the native kernels: {native.unavailable_reason()}")
    lm = tiny_charrnn(CHARS, cell="lstm", seed=5)
    lm.network.use_paths(ServingPaths(prime="fp32", step="fp32", prime_rows=1, step_rows=1, prime_lone="native"))
    calls = {"lone": 0, "batched": 0}
    real_read = CharRNN.read

    def read(self: CharRNN, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        calls["lone" if ids.shape[0] == 1 else "batched"] += 1
        return real_read(self, ids, state)  # type: ignore[return-value]

    native_reads = []
    real_native = native.NativeWeights.read

    def native_read(self: native.NativeWeights, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> object:
        native_reads.append(ids.shape[0])
        return real_native(self, ids, state)

    monkeypatch.setattr(CharRNN, "read", read)
    monkeypatch.setattr(native.NativeWeights, "read", native_read)
    monkeypatch.setattr(batching, "CHUNK_S", 1e-9)  # 1-character chunks: groups change as prompts end
    monkeypatch.setattr(batching, "IDLE_CHUNK_S", 1e-9)
    async with GenerationEngine(max_streams_per_model=16, max_queue=16, batch_invariant=False) as e:
        first = e.submit(lm, "the quick brown fox jumps", SamplingParams(seed=1, max_length=30))
        await asyncio.sleep(0)  # it may start alone; the others join its reading group
        rest = [e.submit(lm, "to be " * (1 + i), SamplingParams(seed=2 + i, max_length=30)) for i in range(4)]
        results = await asyncio.gather(*(collect(s) for s in [first, *rest]))
    assert [(len(text), stats.done_reason) for text, stats, _ in results] == [(30, "length")] * 5
    assert calls["lone"] and calls["batched"]  # the longest prompt ends alone, after the others
    assert native_reads and set(native_reads) == {1}  # the lone reader, and only for lone chunks


async def test_a_stream_running_keeps_stepping_between_chunks_of_a_long_prompt(
    tiny: LoadedGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genbot.engine import batching

    order: list[str] = []
    real_read, real_step = CharRNN.read, CharRNN.step

    def read(self: CharRNN, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        order.append("r")
        return real_read(self, ids, state)  # type: ignore[return-value]

    def step(self: CharRNN, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        order.append("s")
        return real_step(self, ids, state)  # type: ignore[return-value]

    monkeypatch.setattr(CharRNN, "read", read)
    monkeypatch.setattr(CharRNN, "step", step)
    monkeypatch.setattr(batching, "CHUNK_S", 1e-9)  # one character per chunk
    async with GenerationEngine(max_streams_per_model=8, max_queue=8) as e:
        running = e.submit(tiny, "a", SamplingParams(seed=1, max_length=5000))
        await anext(running)
        order.clear()
        await collect(e.submit(tiny, "the quick brown fox " * 5, SamplingParams(seed=2, max_length=3)))
        running.cancel()
    reading = "".join(order)
    reading = reading[: reading.rindex("r") + 1]
    assert reading.count("r") == 100 and "rr" not in reading  # a decode step after every chunk


async def test_cancelling_a_stream_while_its_prompt_is_read(
    tiny: LoadedGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genbot.engine import batching

    monkeypatch.setattr(batching, "IDLE_CHUNK_S", 1e-9)
    async with GenerationEngine(max_streams_per_model=8, max_queue=8) as e:
        s = e.submit(tiny, "a long prompt " * 50, SamplingParams(seed=3, max_length=10))
        s.cancel()
        stats = await s.result()
    assert stats.done_reason == "cancelled" and e.queued_or_running(tiny) == 0


async def test_a_failing_batched_read_fails_its_streams_and_the_engine_goes_on(
    tiny: LoadedGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = CharRNN.read
    fail = [1]

    def read(self: CharRNN, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if fail[0]:
            fail[0] -= 1
            raise RuntimeError("injected read failure")
        return real_read(self, ids, state)  # type: ignore[return-value]

    monkeypatch.setattr(CharRNN, "read", read)
    async with GenerationEngine(max_streams_per_model=8, max_queue=8) as e:
        failed = e.submit(tiny, "the ", SamplingParams(seed=1, max_length=5))
        stats = await failed.result()
        assert stats.done_reason == "error" and "injected read failure" in (stats.error or "")
        assert len(await generate(e, tiny, "the ", seed=1, max_length=5)) == 5


def test_prepare_measures_paths_once_and_caches_them_in_data_dir(tmp_path: Path) -> None:
    from genbot.engine import paths
    from genbot.engine.registry import GeneratorEntry, prepare

    tuner = paths.PathTuner(cache_dir=tmp_path)
    paths._process_cache.clear()
    lm = prepare(tiny_charrnn(CHARS, seed=1), tuner)
    chosen = lm.network.serving_paths
    assert chosen.prime in paths.prime_candidates(lm.network) and chosen.step in paths.step_candidates(lm.network)
    assert "fastest of" in chosen.reason and chosen.measured  # measured, with the timings kept
    cached = json.loads((tmp_path / paths.CACHE_FILE).read_text())
    assert list(cached) == [tuner.key(lm.network)]
    key = next(iter(cached))
    assert torch.backends.cpu.get_cpu_capability() in key and torch.__version__ in key and "lstm 2x32" in key
    paths._process_cache.clear()  # a new process: the choice comes from data_dir, not a new measurement
    again = prepare(tiny_charrnn(CHARS, seed=2), tuner).network.serving_paths
    assert again.reason.endswith("(cached)") and (again.prime, again.step) == (chosen.prime, chosen.step)
    described = GeneratorEntry.ok(lm, "test").serving_paths()
    assert described is not None and described["prime"] == chosen.prime and described["step"] == chosen.step


def test_two_cpus_that_differ_only_in_instruction_sets_never_share_a_cached_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Virtual machines report one model name ("AMD EPYC") for CPUs with and without bf16 instructions."""
    from genbot.engine import paths
    from genbot.engine.registry import prepare

    tuner = paths.PathTuner(cache_dir=tmp_path)
    lm = tiny_charrnn(CHARS, seed=1)
    assert all(flag in paths.cpu_id() for flag in paths.cpu_flags())
    monkeypatch.setattr(paths, "cpu_flags", lambda: ["avx2", "f16c"])
    paths._process_cache.clear()
    prepare(lm, tuner)
    monkeypatch.setattr(paths, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16", "f16c"])
    paths._process_cache.clear()
    other = prepare(tiny_charrnn(CHARS, seed=1), tuner).network.serving_paths
    assert not other.reason.endswith("(cached)")  # measured anew on the other CPU
    keys = list(json.loads((tmp_path / paths.CACHE_FILE).read_text()))
    assert len(keys) == 2 and any("avx512_bf16" in k for k in keys) and not all("avx512_bf16" in k for k in keys)


def test_engine_settings_force_a_path(tmp_path: Path) -> None:
    from genbot.config import EngineSettings, Settings
    from genbot.engine.registry import prepare, tuner_for

    settings = Settings(data_dir=tmp_path, engine=EngineSettings(prime_path="bf16", step_path="fp32"))
    forced = prepare(tiny_charrnn(CHARS, seed=1), tuner_for(settings)).network.serving_paths
    assert (forced.prime, forced.step) == ("bf16", "fp32") and "forced" in forced.reason
    with pytest.raises(ValueError):
        EngineSettings(prime_path="int4")  # type: ignore[arg-type]


def test_exact_mode_never_picks_a_path_whose_rows_depend_on_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from genbot.engine import paths

    monkeypatch.setattr(paths, "_prime_rows", lambda model, path, step="fp32": 2 if path == "fp32" else 0)
    monkeypatch.setattr(paths, "_step_rows", lambda model, path: 2 if path == "fp32" else 0)
    model = tiny_charrnn(CHARS, seed=1).network
    with torch.inference_mode():
        exact = paths.measure(model, batch_invariant=True)
        loose = paths.measure(model, batch_invariant=False)
    assert (exact.prime, exact.step) == ("fp32", "fp32") and "not batch-invariant" in exact.reason
    assert set(loose.measured) >= {"prime_fp32", "prime_bf16", "step_fp32"}  # every path was timed
    assert (loose.prime_rows, loose.step_rows) == (1, 1)  # fast mode pads no lone prompt or stream


def test_exact_mode_falls_back_to_exact_readers_where_float32_rounds_by_row_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from genbot.engine import paths

    def prime_rows(model: CharRNN, path: str, step: str = "fp32") -> int:
        return 1 if path == "steps" and step == "rowwise" else 0  # only one-character reads through rowwise agree

    monkeypatch.setattr(paths, "_prime_rows", prime_rows)
    monkeypatch.setattr(paths, "_step_rows", lambda model, path: 1 if path == "rowwise" else 0)
    model = tiny_charrnn(CHARS, seed=1).network
    with torch.inference_mode():
        chosen = paths.measure(model, batch_invariant=True)
        loose = paths.measure(model, batch_invariant=False)
    assert (chosen.prime, chosen.step) == ("steps", "rowwise"), chosen.reason
    assert "fp32" not in chosen.reason.split("fastest of")[1].split("(")[0]
    assert (loose.prime, loose.step) != ("steps", "rowwise")  # never chosen for speed where it is not needed


def test_no_exact_path_at_all_serves_float32_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from genbot.engine import paths

    monkeypatch.setattr(paths, "_prime_rows", lambda model, path, step="fp32": 0)
    monkeypatch.setattr(paths, "_step_rows", lambda model, path: 0)
    with torch.inference_mode():
        chosen = paths.measure(tiny_charrnn(CHARS, seed=1).network, batch_invariant=True)
    assert (chosen.prime, chosen.step) == ("fp32", "fp32")
    assert "is batch-invariant here" in chosen.reason and "none of" in chosen.reason


async def test_a_path_whose_lone_row_agrees_needs_no_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    from genbot.networks.charrnn import fp16_available

    if not fp16_available():
        pytest.skip("no FBGEMM float16 kernels in this torch build")
    lm = tiny_charrnn(CHARS, seed=4)
    lm.network.use_paths(ServingPaths(prime="fp16", step="fp16", prime_rows=1, step_rows=1))
    sizes: list[int] = []
    real_step = CharRNN.step

    def step(self: CharRNN, ids: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        sizes.append(len(ids))
        return real_step(self, ids, state)  # type: ignore[return-value]

    monkeypatch.setattr(CharRNN, "step", step)
    async with GenerationEngine(max_streams_per_model=4, max_queue=0) as e:
        assert len(await generate(e, lm, max_length=8, seed=1)) == 8
    assert set(sizes) == {1}


def test_engine_paths_cache_names_one_file_that_several_data_folders_share(tmp_path: Path) -> None:
    from genbot.config import Settings
    from genbot.engine import paths
    from genbot.engine.registry import prepare, tuner_for

    shared = tmp_path / "shared" / "paths.json"
    first = Settings(data_dir=tmp_path / "a", engine={"paths_cache": shared})  # type: ignore[arg-type]
    paths._process_cache.clear()
    measured = prepare(tiny_charrnn(CHARS, seed=1), tuner_for(first)).network.serving_paths
    assert shared.is_file() and not (tmp_path / "a" / paths.CACHE_FILE).exists()
    paths._process_cache.clear()  # as a second process would start
    second = Settings(data_dir=tmp_path / "b", engine={"paths_cache": shared})  # type: ignore[arg-type]
    again = prepare(tiny_charrnn(CHARS, seed=1), tuner_for(second)).network.serving_paths
    assert again.reason.endswith("(cached)") and (again.prime, again.step) == (measured.prime, measured.step)


async def test_a_running_engine_hands_the_gil_over_promptly_and_restores_the_setting() -> None:
    """Workers coming back from a native call should not wait Python's default 5 ms for the GIL."""
    import sys

    from genbot.engine import batching

    before = sys.getswitchinterval()
    async with GenerationEngine(max_streams_per_model=4, max_queue=0):
        assert sys.getswitchinterval() == min(before, batching.SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == before

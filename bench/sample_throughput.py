"""Sampling throughput of genbot's GenerationEngine vs the raw yardstick, at 1 torch thread.

What it measures, for an LSTM 2x256 (vocab 65) and for the bundled shakespeare model's shape:

* aggregate chars/s through ``GenerationEngine`` at 1, 8 and 64 concurrent streams (wall time
  from the first submit to the last result, every chunk read by an asyncio consumer, priming
  included) vs ``raw_charrnn.py sample`` (a bare decode loop, best of nn.LSTM and nn.LSTMCell);
* time to first character after a 200-char prompt, one stream at a time, as the client sees it
  (submit → first chunk received by the consumer), interleaved trial by trial with a bare
  float32 ``forward`` of the same prompt + sampling (the raw column); median and p95; in exact
  mode and with ``batch_invariant = false`` (whose lone prompt is read unpadded);
* 64 clients arriving at once with 64 different 200-char prompts: p50/p95 time to first char
  vs one bare float32 batched ``forward`` of the same 64 prompts;
* the rate of 8 running streams while those 64 are admitted, vs their rate just before;
* single-stream chars/s of every bundled model present;
* the physical limits of this CPU for the shakespeare shape: the weight bytes one character reads
  on the chosen step path against the measured read bandwidth of a buffer that size (one
  stream is bound by memory), and the FLOPs of a 64-stream step against a measured single-thread
  float32 matrix product (64 streams are bound by arithmetic).

The CPU capability, its bf16/AMX flags and the serving paths each model chose at load (and why)
are printed with the figures.

Why 1 thread: serving processes run torch with one thread per model worker. Why the engine and
not the bare model: the engine's batching, sampler, stop strings and hand-off to asyncio are what
a user waits for. Missing bundled weights fall back to random weights of the same shape.

    python bench/sample_throughput.py [MODEL_FOLDER] [--length 300] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as bl

NAME = "sample_throughput"
SMALL = {"cell": "lstm", "layers": 2, "hidden": 256, "embedding": 64, "vocab_size": 65}
SHAKESPEARE = {"cell": "lstm", "layers": 2, "hidden": 384, "embedding": 64, "vocab_size": 65}
TARGETS = {1: 1.5, 64: 0.9}  # genbot / raw at that many streams; other counts are reported only
TTFC_TARGET = 1.0  # time to first char / bare float32 forward of the prompt
ARRIVAL_TARGET = 3.0  # p95 time to first char of 64 arriving clients / bare batched forward of their prompts
ADMISSION_TARGET = 0.5  # running streams' rate while 64 are admitted / their rate before
SINGLE_STREAM_TARGET = 2000.0


@dataclass
class Loaded:
    """A bench model and its loaded weights, ready for the engine."""

    info: bl.BenchModel
    loaded: Any  # genbot.networks.checkpoint.LoadedGenerator, paths chosen for exact mode
    fast: Any  # the same weights, paths chosen for ``batch_invariant = false``


def load(info: bl.BenchModel) -> Loaded:
    """Load a bench model the way the service does (CPU, eval, no gradients), for either mode."""
    return Loaded(info, prepared(info.folder, True), prepared(info.folder, False))


def prepared(folder: Path, invariant: bool) -> Any:
    """The model in ``folder`` in serving shape, with paths measured for that ``batch_invariant``."""
    from genbot.engine.paths import PathTuner
    from genbot.engine.registry import prepare
    from genbot.networks.checkpoint import load_model

    return prepare(load_model(folder), PathTuner(batch_invariant=invariant))


async def engine_rate(loaded: Any, streams: int, length: int, prompt: str = "\n", invariant: bool = True) -> float:
    """Aggregate chars/s of ``streams`` concurrent streams of ``length`` chars, read by consumers.

    ``invariant`` is the engine's ``batch_invariant`` setting: True pads a lone stream to two rows
    so its text equals the same seed inside any batch; False runs it unpadded (faster).
    """
    from genbot.engine.batching import GenerationEngine
    from genbot.engine.sampling import SamplingParams

    async with GenerationEngine(max(streams, 1), streams, 1, batch_invariant=invariant) as engine:
        t0 = time.perf_counter()
        subs = [engine.submit(loaded, prompt, SamplingParams(max_length=length, seed=i)) for i in range(streams)]
        counts = await asyncio.gather(*(_consume(s) for s in subs))
        elapsed = time.perf_counter() - t0
    return sum(counts) / elapsed


async def _consume(stream: Any) -> int:
    """Read a stream to the end as a client would; the characters received."""
    n = 0
    async for chunk in stream:
        n += len(chunk)
    await stream.result()
    return n


async def _first_chunk_ms(engine: Any, loaded: Any, prompt: str, seed: int, length: int = 1) -> float:
    """Submit → first chunk received by the consumer (ms), as a client measures it."""
    from genbot.engine.sampling import SamplingParams

    t0 = time.perf_counter()
    stream = engine.submit(loaded, prompt, SamplingParams(max_length=length, seed=seed))
    async for _ in stream:
        break
    ms = (time.perf_counter() - t0) * 1000
    stream.cancel()
    await stream.result()
    return ms


def bare_forward_ms(loaded: Any, prompts: list[str]) -> float:
    """One plain float32 ``model(prompts)`` + softmax + multinomial (ms): the raw column."""
    import torch

    ids = torch.tensor([loaded.vocab.encode(p).ids for p in prompts])  # (B, T)
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits, _ = loaded.network(ids, loaded.network.initial_state(len(prompts)))  # (B, T, V)
        torch.multinomial(torch.softmax(logits[:, -1] / 0.8, -1), 1)
        return (time.perf_counter() - t0) * 1000


async def ttfc_pairs(loaded: Any, prompt: str, trials: int, invariant: bool = True) -> tuple[list[float], list[float]]:
    """(genbot, raw) ms per trial, interleaved: client-side time to first char, bare forward."""
    from genbot.engine.batching import GenerationEngine

    ours, raw = [], []
    async with GenerationEngine(4, max_queue=4, torch_threads=1, batch_invariant=invariant) as engine:
        for i in range(trials + 2):  # two warm-up trials
            g = await _first_chunk_ms(engine, loaded, prompt, i)
            r = bare_forward_ms(loaded, [prompt])
            if i >= 2:
                ours.append(g)
                raw.append(r)
    return ours, raw


def arrival_prompts(n: int) -> list[str]:
    """``n`` different 200-character prompts (rotations of the bench passage)."""
    text = bl.PROMPT_200 * 2
    return [text[i % 200 : i % 200 + 200] for i in range(n)]


async def arrival_ttfc(loaded: Any, n: int) -> list[float]:
    """Client-side time to first char of ``n`` clients submitting at once."""
    from genbot.engine.batching import GenerationEngine

    async with GenerationEngine(max(n, 1), n, 1) as engine:
        prompts = arrival_prompts(n)
        return list(await asyncio.gather(*(_first_chunk_ms(engine, loaded, p, i) for i, p in enumerate(prompts))))


async def admission_rates(loaded: Any, running: int, arriving: int, window_s: float = 0.5) -> tuple[float, float]:
    """chars/s of ``running`` streams just before, and while ``arriving`` new clients are admitted."""
    from genbot.engine.batching import GenerationEngine
    from genbot.engine.sampling import SamplingParams

    async with GenerationEngine(running + arriving, arriving, 1) as engine:
        streams = [engine.submit(loaded, "\n", SamplingParams(max_length=100_000, seed=i)) for i in range(running)]
        for s in streams:
            await anext(s)
        await asyncio.sleep(0.2)
        before0, t0 = sum(len(s.output) for s in streams), time.perf_counter()
        await asyncio.sleep(window_s)
        before = (sum(len(s.output) for s in streams) - before0) / (time.perf_counter() - t0)
        during0, t1 = sum(len(s.output) for s in streams), time.perf_counter()
        prompts = arrival_prompts(arriving)
        await asyncio.gather(*(_first_chunk_ms(engine, loaded, p, 1000 + i) for i, p in enumerate(prompts)))
        during = (sum(len(s.output) for s in streams) - during0) / (time.perf_counter() - t1)
        for s in streams:
            s.cancel()
    return before, during


def raw_rates(model: bl.BenchModel, streams: list[int], steps: int) -> dict[int, float]:
    """The yardstick's chars/s per stream count for the same architecture, 1 thread."""
    args = [
        "sample",
        *model.raw_args(),
        "--streams",
        ",".join(map(str, streams)),
        "--steps",
        str(steps),
        "--device",
        "cpu",
    ]
    out = bl.run_raw([*args, "--threads", "1"])
    return {b: float(out[f"streams_{b}_chars_per_s"]) for b in streams} if out else {}


def compare(model: Loaded, streams: list[int], length: int, repeats: int, with_raw: bool) -> dict[str, Any]:
    """Interleave raw and engine runs ``repeats`` times; every figure per stream count."""
    runs: dict[str, dict[int, list[float]]] = {
        "genbot": {b: [] for b in streams},
        "raw": {b: [] for b in streams},
        "genbot_fast": {1: []} if 1 in streams else {},
    }
    asyncio.run(engine_rate(model.loaded, max(streams), 10))  # warm-up: threads, allocator, kernels
    for i in range(repeats):
        bl.say(f"[{i + 1}/{repeats}] {model.info.label()}: raw, then engine at {streams} streams …")
        for b, rate in (raw_rates(model.info, streams, length) if with_raw else {}).items():
            runs["raw"][b].append(rate)
        for b in streams:
            runs["genbot"][b].append(asyncio.run(engine_rate(model.loaded, b, length)))
        for b in runs["genbot_fast"]:
            runs["genbot_fast"][b].append(asyncio.run(engine_rate(model.fast, b, length, invariant=False)))
    return runs


def rate_rows(model: Loaded, runs: dict[str, dict[int, list[float]]]) -> list[bl.Row]:
    """One row per stream count: medians, ratio, and the target where there is one."""
    rows = []
    for b, figures in runs["genbot"].items():
        what = f"sample {model.info.label()}, {b} stream{'s' if b > 1 else ''}, 1 thread"
        goal: bl.Goal | None = "ratio>=" if b in TARGETS else None
        rows.append(bl.Row(what, bl.median(figures), bl.median(runs["raw"][b]), "chars/s", goal, TARGETS.get(b)))
    for b, figures in runs.get("genbot_fast", {}).items():
        what = f"sample {model.info.label()}, {b} stream, 1 thread, batch_invariant=false"
        rows.append(bl.Row(what, bl.median(figures), bl.median(runs["raw"][b]), "chars/s", "ratio>=", TARGETS.get(b)))
    return rows


def step_weights(model: Any) -> int:
    """Weights one step reads: every recurrent matrix but layer 0's input one (a table lookup), and the head."""
    c = model.config
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.cell] * c.hidden
    return c.hidden * gates * (2 * c.layers - 1) + c.hidden * c.vocab_size


def read_gb_s(nbytes: int, repeats: int = 200) -> float:
    """Best one-thread read bandwidth (GB/s) summing a float32 buffer of ``nbytes``, hot in cache as weights are."""
    import torch

    buf = torch.rand(max(1, nbytes // 4))
    with one_thread():
        buf.sum()
        best = min(_timed(buf.sum) for _ in range(repeats))
    return nbytes / best / 1e9


def matmul_gflop_s(n: int = 1024, repeats: int = 30) -> float:
    """Best float32 matrix-product rate (GFLOP/s) of torch on one thread: a practical peak here."""
    import torch

    a, b = torch.rand(n, n), torch.rand(n, n)
    with one_thread():
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread, as a serving worker runs (the bench process itself may use more)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def limit_rows(model: Loaded, runs: dict[str, dict[int, list[float]]]) -> tuple[list[bl.Row], dict[str, Any]]:
    """One stream against memory bandwidth, 64 against arithmetic: genbot's µs per character and the floor."""
    paths = model.loaded.network.serving_paths
    weights = step_weights(model.loaded.network)
    width = 2 if paths.step in ("fp16", "bf16", "rowwise_fp16", "native_fp16") else 4
    nbytes = weights * width
    gb_s, gflop_s = read_gb_s(nbytes), matmul_gflop_s()
    one = bl.median(runs["genbot"].get(1, [])) if runs.get("genbot", {}).get(1) else None
    many = bl.median(runs["genbot"].get(64, [])) if runs.get("genbot", {}).get(64) else None
    flop = 2 * weights
    rows = [
        bl.Row(f"1 stream, {model.info.name}: µs per char (raw column: {nbytes / 1e6:.2f} MB of {paths.step} weights"
               f" read at the measured {gb_s:.0f} GB/s)", 1e6 / one if one else None, nbytes / gb_s / 1e3, "µs"),
        bl.Row(f"64 streams, {model.info.name}: µs per step of 64 (raw column: 64 x {flop / 1e6:.1f} MFLOP at the"
               f" measured {gflop_s:.0f} GFLOP/s of a 1-thread float32 matmul)", 64e6 / many if many else None,
               64 * flop / gflop_s / 1e3, "µs"),
    ]  # fmt: skip
    return rows, {"read_gb_s": round(gb_s, 1), "matmul_gflop_s": round(gflop_s, 1), "step_bytes": nbytes}


def ttfc_rows(model: Loaded, trials: int, arrivals: int, repeats: int) -> tuple[list[bl.Row], dict[str, Any]]:
    """Time to first char: one client (vs a bare forward), 64 arriving (vs a batched one), admission."""
    encoded = len(model.loaded.vocab.encode(bl.PROMPT_200).ids)
    times, floor = asyncio.run(ttfc_pairs(model.loaded, bl.PROMPT_200, trials))
    fast, fast_floor = asyncio.run(ttfc_pairs(model.fast, bl.PROMPT_200, trials, invariant=False))
    label = f"time to first char (client side), 200-char prompt ({encoded} known), {model.info.name}"
    raw_label = "(raw: bare fp32 forward + sample)"
    arrival: list[float] = []
    batched_raw: list[float] = []
    before: list[float] = []
    during: list[float] = []
    for _ in range(repeats):  # interleaved
        batched_raw.append(bare_forward_ms(model.loaded, arrival_prompts(arrivals)))
        arrival += asyncio.run(arrival_ttfc(model.loaded, arrivals))
        b, d = asyncio.run(admission_rates(model.loaded, 8, arrivals))
        before.append(b)
        during.append(d)
    p95 = [bl.percentile(arrival, 95)]
    many = f"{arrivals} clients arriving at once, time to first char"
    rows = [
        bl.Row(f"{label}, median of {trials} {raw_label}", bl.median(times), bl.median(floor), "ms", "ratio<=",
               TTFC_TARGET),
        bl.Row(f"{label}, p95 {raw_label}", bl.percentile(times, 95), bl.percentile(floor, 95), "ms"),
        bl.Row(f"{label}, batch_invariant=false, median of {trials} {raw_label}", bl.median(fast),
               bl.median(fast_floor), "ms", "ratio<=", TTFC_TARGET),
        bl.Row(f"{many} p50 (raw: bare batched fp32 forward of the {arrivals} prompts)",
               bl.percentile(arrival, 50), bl.median(batched_raw), "ms"),
        bl.Row(f"{many} p95 (raw: same)",
               p95[0], bl.median(batched_raw), "ms", "ratio<=", ARRIVAL_TARGET),
        bl.Row(f"8 running streams while {arrivals} are admitted (raw: the same 8 just before)",
               bl.median(during), bl.median(before), "chars/s", "ratio>=", ADMISSION_TARGET),
    ]  # fmt: skip
    return rows, {"ttfc_ms": times, "raw_ttfc_ms": floor, "fast_ttfc_ms": fast, "fast_raw_ttfc_ms": fast_floor,
                  "arrival_ms": arrival, "batched_raw_ms": batched_raw, "admission_before": before,
                  "admission_during": during}  # fmt: skip


def bundled_rows(plugins_dir: Path, length: int) -> tuple[list[bl.Row], list[str]]:
    """Single-stream chars/s of each bundled model that loads; notes for those that do not."""
    from genbot.errors import GenbotError

    rows, notes = [], []
    for folder in bl.bundled_folders(plugins_dir):
        try:  # only real bundled weights count here; a stand-in would say nothing about them
            both = {True: prepared(folder, True), False: prepared(folder, False)}
        except GenbotError as e:
            notes.append(f"bundled model {folder.name} skipped: {str(e).replace(str(folder), bl.shown(folder))}")
            continue
        loaded = both[True]
        arch = loaded.network.config
        label = f"{arch.cell.upper()} {arch.layers}x{arch.hidden} emb {arch.embedding} vocab {arch.vocab_size}"
        for invariant, model in both.items():
            rate = asyncio.run(engine_rate(model, 1, length, invariant=invariant))
            mode = "" if invariant else ", batch_invariant=false"
            what = f"single stream, bundled {loaded.card.name} ({label}), 1 thread{mode}"
            rows.append(bl.Row(what, rate, None, "chars/s", "value>=", SINGLE_STREAM_TARGET))
    if not rows:
        notes.append(f"no loadable bundled model under {plugins_dir}: single-stream figures of bundled models skipped")
    return rows, notes


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick``: short streams, 1 repeat, 10 TTFC trials)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="shakespeare model folder (default plugins/shakespeare)")
    p.add_argument("--plugins-dir", type=Path, default=bl.DEFAULT_PLUGINS, help="bundled plugins folder")
    p.add_argument("--length", type=int, default=300, help="characters per stream (= raw --steps)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per side (median reported)")
    p.add_argument("--trials", type=int, default=50, help="time-to-first-char trials")
    p.add_argument("--streams", default="1,8,64", help="stream counts to measure")
    p.add_argument("--arrivals", type=int, default=64, help="clients arriving at once in the admission figures")
    p.add_argument("--skip-rates", action="store_true", help="only the time-to-first-char and admission figures")
    p.add_argument("--quick", action="store_true", help="smoke test: 60 chars, 1 repeat, 10 trials")
    a = p.parse_args()
    if a.quick:
        a.length, a.repeats, a.trials = 60, 1, 10
    return a


def main() -> None:
    """Measure both architectures, the first-char latency and the bundled models; report."""
    a = parse_args()
    streams = [int(s) for s in a.streams.split(",")]
    folder = Path(a.model) if a.model else a.plugins_dir / "shakespeare"
    notes = [n for n in (bl.load_warning(1),) if n]
    with_raw = bl.raw_anchor() is not None
    if not with_raw:
        notes.append(bl.raw_missing_note())
    with bl.scratch_dir("sample") as tmp:
        small = load(bl.bench_model(None, "lstm-2x256", SMALL, Path(tmp)))
        shakes = load(bl.bench_model(folder, "shakespeare", SHAKESPEARE, Path(tmp)))
        notes += ["LSTM 2x256: random weights (speed does not depend on them)", f"shakespeare: {shakes.info.note}"]
        notes += [bl.paths_note(m.info.name, m.loaded.network) for m in (small, shakes)]
        notes += [bl.paths_note(f"{m.info.name} (batch_invariant=false)", m.fast.network) for m in (small, shakes)]
        env = bl.environment(1)
        notes.append(f"CPU capability {env['cpu_capability']}, flags {' '.join(env['cpu_flags'])}")
        notes.append(f"native kernels: {env['native_kernels']}")
        runs: dict[str, Any] = {}
        rows: list[bl.Row] = []
        limits: dict[str, Any] = {}
        if not a.skip_rates:
            runs = {m.info.name: compare(m, streams, a.length, a.repeats, with_raw) for m in (small, shakes)}
            rows = rate_rows(small, runs[small.info.name]) + rate_rows(shakes, runs[shakes.info.name])
            limit, limits = limit_rows(shakes, runs[shakes.info.name])
            rows += limit
        latency_rows, latency = ttfc_rows(shakes, a.trials, a.arrivals, a.repeats)
        single_rows, single_notes = ([], []) if a.skip_rates else bundled_rows(a.plugins_dir, a.length)
    if a.quick:
        notes.append("--quick: short streams and few trials; smoke test only, figures not representative")
    paths = {m.info.name: m.loaded.network.serving_paths.to_dict() for m in (small, shakes)}
    paths |= {f"{m.info.name}-fast": m.fast.network.serving_paths.to_dict() for m in (small, shakes)}
    latency = {k: [round(t, 3) for t in v] for k, v in latency.items()}
    payload = {"length": a.length, "repeats": a.repeats, "runs": runs, "paths": paths, "limits": limits, **latency}
    bl.report(NAME, rows + latency_rows + single_rows, payload | {"env": env}, notes + single_notes)


if __name__ == "__main__":
    main()

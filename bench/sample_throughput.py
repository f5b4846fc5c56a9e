"""Sampling throughput of genbot's GenerationEngine vs the raw yardstick, at 1 torch thread.

What it measures, for an LSTM 2x256 (vocab 65) and for the bundled shakespeare model's shape:

* aggregate chars/s through ``GenerationEngine`` at 1, 8 and 64 concurrent streams (wall time
  from the first submit to the last result, every chunk read by an asyncio consumer, priming
  included) vs ``raw_charrnn.py sample`` (a bare decode loop, best of nn.LSTM and nn.LSTMCell);
* time to first character after a 200-char prompt, one stream at a time (the engine's
  submit → first char, 50 trials: median and p95);
* single-stream chars/s of every bundled model present.

Why 1 thread: serving processes run torch with one thread per model worker. Why the engine and
not the bare model: the engine's batching, sampler, stop strings and hand-off to asyncio are what
a user waits for. Missing bundled weights fall back to random weights of the same shape.

    python bench/sample_throughput.py [MODEL_FOLDER] [--length 300] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as bl

NAME = "sample_throughput"
SMALL = {"cell": "lstm", "layers": 2, "hidden": 256, "embedding": 64, "vocab_size": 65}
SHAKESPEARE = {"cell": "lstm", "layers": 2, "hidden": 384, "embedding": 64, "vocab_size": 65}
TARGETS = {1: 0.9, 64: 0.7}  # genbot / raw at that many streams; other counts are reported only
TTFC_TARGET_MS = 5.0
SINGLE_STREAM_TARGET = 2000.0


@dataclass
class Loaded:
    """A bench model and its loaded weights, ready for the engine."""

    info: bl.BenchModel
    loaded: Any  # genbot.models.checkpoint.LoadedModel


def load(info: bl.BenchModel) -> Loaded:
    """Load a bench model the way the service does (CPU, eval, no gradients)."""
    from genbot.engine.registry import prepare
    from genbot.models.checkpoint import load_model

    return Loaded(info, prepare(load_model(info.folder)))


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


async def ttfc_ms(loaded: Any, prompt: str, trials: int) -> list[float]:
    """Submit → first character (ms) for ``trials`` one-at-a-time streams primed with ``prompt``."""
    from genbot.engine.batching import GenerationEngine
    from genbot.engine.sampling import SamplingParams

    out: list[float] = []
    async with GenerationEngine(4, max_queue=4, torch_threads=1) as engine:
        for i in range(trials + 2):  # two warm-up trials
            stats = await engine.submit(loaded, prompt, SamplingParams(max_length=1, seed=i)).result()
            if i >= 2:
                out.append(stats.first_char_duration / 1e6)
    return out


def bare_prime_ms(loaded: Any, prompt: str, trials: int) -> list[float]:
    """Plain ``model(prompt)`` + softmax in ms at 1 thread: the floor under any time to first char."""
    import torch

    torch.set_num_threads(1)
    ids = torch.tensor([loaded.vocab.encode(prompt).ids])  # (1, T)
    model, out = loaded.model, []
    with torch.inference_mode():
        for i in range(trials + 2):  # two warm-up trials
            t0 = time.perf_counter()
            logits, _ = model(ids, model.initial_state(1))  # (1, T, V)
            torch.multinomial(torch.softmax(logits[:, -1] / 0.8, -1), 1)
            if i >= 2:
                out.append((time.perf_counter() - t0) * 1000)
    return out


def raw_rates(model: bl.BenchModel, streams: list[int], steps: int) -> dict[int, float]:
    """The yardstick's chars/s per stream count for the same architecture, 1 thread."""
    args = ["sample", *model.raw_args(), "--streams", ",".join(map(str, streams)), "--steps", str(steps)]
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
            runs["genbot_fast"][b].append(asyncio.run(engine_rate(model.loaded, b, length, invariant=False)))
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


def ttfc_rows(model: Loaded, trials: int) -> tuple[list[bl.Row], list[float]]:
    """Median (held to the target) and p95 time to first char after a 200-char prompt.

    The raw column is the bare model's forward over the same prompt (no engine), as a floor.
    """
    encoded = len(model.loaded.vocab.encode(bl.PROMPT_200).ids)
    times = asyncio.run(ttfc_ms(model.loaded, bl.PROMPT_200, trials))
    floor = bare_prime_ms(model.loaded, bl.PROMPT_200, trials)
    label = f"time to first char, 200-char prompt ({encoded} known), {model.info.name} (raw: bare forward)"
    return [
        bl.Row(f"{label}, median of {trials}", bl.median(times), bl.median(floor), "ms", "value<=", TTFC_TARGET_MS),
        bl.Row(f"{label}, p95", bl.percentile(times, 95), bl.percentile(floor, 95), "ms"),
    ], times


def bundled_rows(plugins_dir: Path, length: int) -> tuple[list[bl.Row], list[str]]:
    """Single-stream chars/s of each bundled model that loads; notes for those that do not."""
    from genbot.engine.registry import prepare
    from genbot.errors import GenbotError
    from genbot.models.checkpoint import load_model

    rows, notes = [], []
    for folder in bl.bundled_folders(plugins_dir):
        try:  # only real bundled weights count here; a stand-in would say nothing about them
            loaded = prepare(load_model(folder))
        except GenbotError as e:
            notes.append(f"bundled model {folder.name} skipped: {e}")
            continue
        arch = loaded.model.config
        label = f"{arch.cell.upper()} {arch.layers}x{arch.hidden} emb {arch.embedding} vocab {arch.vocab_size}"
        for invariant in (True, False):
            rate = asyncio.run(engine_rate(loaded, 1, length, invariant=invariant))
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
        runs = {m.info.name: compare(m, streams, a.length, a.repeats, with_raw) for m in (small, shakes)}
        rows = rate_rows(small, runs[small.info.name]) + rate_rows(shakes, runs[shakes.info.name])
        latency_rows, times = ttfc_rows(shakes, a.trials)
        single_rows, single_notes = bundled_rows(a.plugins_dir, a.length)
    if a.quick:
        notes.append("--quick: short streams and few trials; smoke test only, figures not representative")
    payload = {"length": a.length, "repeats": a.repeats, "runs": runs, "ttfc_ms": [round(t, 3) for t in times]}
    bl.report(NAME, rows + latency_rows + single_rows, payload | {"env": bl.environment(1)}, notes + single_notes)


if __name__ == "__main__":
    main()

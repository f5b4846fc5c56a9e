"""Training scaling: ``genbot train`` at 1 and 2 processes (torchrun, DDP over gloo), in characters per second.

What it measures: the same global batch (64 windows of 100 chars, LSTM 2x256 emb 64) trained as

* one process with 1 thread, and one process with 2 threads (all of a 2-core machine);
* two ranks with 1 thread each and batch 32 per rank (``--nproc 2``): also all of 2 cores;

and the yardstick (``raw_charrnn.py train``, 2 threads) for the ratio. Each genbot figure is the
trainer's own ``chars_per_s`` from its ``done`` line: global characters over rank 0's time in
training steps (gradient all-reduce included; start-up and evaluation excluded).

Two efficiencies, since on 2 cores they answer different questions:

* ``efficiency`` = 2 ranks / (2 × 1 process at 1 thread): classic data-parallel scaling;
* ``vs 2 threads`` = 2 ranks / 1 process at 2 threads: the honest comparison for the same cores.

Runs are interleaved (1p1t, 1p2t, 2p, raw, …) and each side's median is reported.

    python bench/train_scaling.py [CORPUS] [--steps 50] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import benchlib as bl

NAME = "train_scaling"
CELL, LAYERS, HIDDEN, EMB, BATCH, BLOCK = "lstm", 2, 256, 64, 64, 100
SIDES = ("1 process, 1 thread", "1 process, 2 threads", "2 processes, 1 thread each")


def run_genbot(corpus: Path, steps: int, nproc: int, threads: int) -> float | None:
    """``genbot train`` chars/s for ``nproc`` ranks of ``threads`` threads, global batch 64 (None on failure)."""
    with bl.scratch_dir("scaling") as tmp:
        cmd = [sys.executable, "-m", "genbot", "train", f"--corpus={corpus}", f"--out={Path(tmp) / 'model'}"]
        cmd += [f"--steps={steps}", f"--eval-every={steps + 1}", f"--batch={BATCH // nproc}", f"--block={BLOCK}"]
        cmd += [f"--cell={CELL}", f"--layers={LAYERS}", f"--hidden={HIDDEN}", f"--emb={EMB}"]
        cmd += [f"--threads={threads}", f"--nproc={nproc}", "--json"]
        out = bl.run_json_child(cmd)
    return float(out["chars_per_s"]) if out and out.get("event") == "done" else None


def run_raw(corpus: Path, steps: int, threads: int) -> float | None:
    """The yardstick's training chars/s with the same architecture and global batch."""
    args = ["train", str(corpus), "--steps", str(steps), "--batch", str(BATCH), "--block", str(BLOCK)]
    out = bl.run_raw([*args, *bl.arch_args(CELL, LAYERS, HIDDEN, EMB), "--threads", str(threads)])
    return float(out["chars_per_s"]) if out else None


def interleaved(corpus: Path, steps: int, repeats: int, with_raw: bool) -> dict[str, list[float]]:
    """Every side once per round, ``repeats`` rounds; each side's figures in run order."""
    runs: dict[str, list[float]] = {side: [] for side in (*SIDES, "raw")}
    shapes = dict(zip(SIDES, ((1, 1), (1, 2), (2, 1)), strict=True))
    for i in range(repeats):
        for side, (nproc, threads) in shapes.items():
            bl.say(f"[{i + 1}/{repeats}] genbot train, {side}, {steps} steps …")
            figure = run_genbot(corpus, steps, nproc, threads)
            runs[side] += [figure] if figure else []
        if with_raw:
            bl.say(f"[{i + 1}/{repeats}] raw_charrnn train, 2 threads, {steps} steps …")
            raw = run_raw(corpus, steps, 2)
            runs["raw"] += [raw] if raw else []
    return runs


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick``: 3 steps, one round)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", help=f"text file (default ${bl.CORPUS_ENV} or tiny-shakespeare)")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps per run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 steps, 1 round")
    a = p.parse_args()
    if a.quick:
        a.steps, a.repeats = 3, 1
    return a


def main() -> None:
    """Run the interleaved rounds and report medians, ratios against raw, and the two efficiencies."""
    a = parse_args()
    corpus = bl.corpus_path(a.corpus)
    notes = [n for n in (bl.load_warning(2),) if n]
    with_raw = bl.raw_anchor() is not None
    if not with_raw:
        notes.append(bl.raw_missing_note())
    runs = interleaved(corpus, a.steps, a.repeats, with_raw)
    medians = {side: bl.median(figures) for side, figures in runs.items()}
    one, two_threads, two = (medians[side] for side in SIDES)
    shape = "LSTM 2x256 emb 64, global batch 64x100"
    rows = [bl.Row(f"training chars/s, {side}, {shape}", medians[side], medians["raw"], "chars/s") for side in SIDES]
    efficiency = round(two / (2 * one), 3) if one and two else None
    versus = round(two / two_threads, 3) if two and two_threads else None
    rows.append(bl.Row("scaling efficiency, 2 processes / (2 x 1 process at 1 thread)", efficiency, unit="x"))
    rows.append(bl.Row("2 processes x 1 thread / 1 process x 2 threads (same cores)", versus, unit="x"))
    notes.append("raw: raw_charrnn.py train at 2 threads, batch 64x100 (ratios of every row are against it)")
    if a.quick:
        notes.append("--quick: 3 steps, one round; smoke test only, figures not representative")
    payload = {"corpus": bl.shown(corpus), "steps": a.steps, "repeats": a.repeats, "runs": runs, "quick": a.quick}
    bl.report(NAME, rows, payload | {"env": bl.environment(2)}, notes)


if __name__ == "__main__":
    main()

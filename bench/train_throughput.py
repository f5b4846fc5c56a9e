"""Training throughput: genbot's ``train()`` loop vs the raw yardstick, in characters per second.

What it measures: optimizer steps (forward + backward + clip + AdamW) on random 64x100 windows
of an LSTM 2x256 (emb 64), on the same corpus and thread count for both. genbot's figure is the
trainer's own ``chars_per_s`` (time spent in training steps only; evaluation is kept out of the
budget with ``eval_every`` beyond the last step). The raw figure is ``raw_charrnn.py train``.
With ``--bf16`` a third side runs genbot's trainer with bfloat16 autocast (``--bf16`` of
``genbot train``) against the same float32 yardstick: its target applies only where the CPU has
bf16 instructions (``avx512_bf16`` or AMX), since elsewhere bfloat16 is emulated and slower.

Why interleaved and median: on a shared 2-core machine the load drifts; running raw, genbot, raw,
genbot … and taking each side's median keeps the ratio fair. Each run is a fresh process, so
neither side inherits the other's warm caches or thread settings.

    python bench/train_throughput.py [CORPUS] [--steps 50] [--repeats 3] [--threads 2] [--bf16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import benchlib as bl

NAME = "train_throughput"
TARGET = 1.0
TARGET_BF16 = 1.3
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_REFUSED: list[bool] = []  # one entry per --bf16 run the trainer ran in float32
CELL, LAYERS, HIDDEN, EMB, BATCH, BLOCK = "lstm", 2, 256, 64, 64, 100


def genbot_child(corpus: Path, steps: int, threads: int, bf16: bool) -> dict[str, Any]:
    """Run genbot's trainer for ``steps`` steps in this process; its own throughput figure."""
    from genbot.networks.checkpoint import load_model
    from genbot.training.trainer import TrainConfig, train

    cfg = TrainConfig(
        cell=CELL,
        layers=LAYERS,
        hidden=HIDDEN,
        embedding=EMB,
        batch=BATCH,
        block=BLOCK,
        threads=threads,
        steps=steps,
        bf16=bf16,
        eval_every=steps + 1,  # no periodic evaluation inside the budget
        eval_iters=1,
        final_eval_iters=1,  # the final evaluation is outside the timing, but keep it short
    )
    with bl.scratch_dir("train") as tmp:
        result = train(cfg, corpus, Path(tmp) / "model")
        bf16_used = load_model(Path(tmp) / "model").card.training.get("bf16_used", False)
    return {"chars_per_s": result.chars_per_s, "steps": result.steps, "seconds": result.seconds, "bf16_used": bf16_used}


def run_genbot(corpus: Path, steps: int, threads: int, bf16: bool = False) -> float | None:
    """genbot's training chars/s from a fresh child process (None if it failed); notes a refused bf16."""
    cmd = [sys.executable, __file__, str(corpus), "--genbot-child", "--steps", str(steps), "--threads", str(threads)]
    cmd += ["--bf16"] if bf16 else []
    out = bl.run_json_child(cmd)
    if out and bf16 and not out["bf16_used"]:
        bl.say("  the trainer refused bfloat16 here (it cannot run or is slower): this run trained in float32")
        BF16_REFUSED.append(True)
    return float(out["chars_per_s"]) if out else None


def run_raw(corpus: Path, steps: int, threads: int) -> float | None:
    """The yardstick's training chars/s with the same architecture, batch and threads."""
    args = ["train", str(corpus), "--steps", str(steps), "--batch", str(BATCH), "--block", str(BLOCK)]
    args += bl.arch_args(CELL, LAYERS, HIDDEN, EMB)
    out = bl.run_raw([*args, "--threads", str(threads)])
    return float(out["chars_per_s"]) if out else None


def interleaved(
    corpus: Path, steps: int, threads: int, repeats: int, with_raw: bool, bf16: bool
) -> dict[str, list[float]]:
    """raw, genbot[, genbot bf16], raw, genbot … ``repeats`` times; each side's figures in run order."""
    runs: dict[str, list[float]] = {"genbot": [], "raw": [], "genbot_bf16": []}
    for i in range(repeats):
        if with_raw:
            bl.say(f"[{i + 1}/{repeats}] raw_charrnn train, {steps} steps, {threads} thread(s) …")
            raw = run_raw(corpus, steps, threads)
            runs["raw"] += [raw] if raw else []
        bl.say(f"[{i + 1}/{repeats}] genbot train(), {steps} steps, {threads} thread(s) …")
        gen = run_genbot(corpus, steps, threads)
        runs["genbot"] += [gen] if gen else []
        if bf16:
            bl.say(f"[{i + 1}/{repeats}] genbot train() with bf16 autocast, {steps} steps, {threads} thread(s) …")
            half = run_genbot(corpus, steps, threads, bf16=True)
            runs["genbot_bf16"] += [half] if half else []
    return runs


def bf16_row(what: str, runs: dict[str, list[float]], notes: list[str]) -> bl.Row:
    """genbot with bf16 autocast against the float32 yardstick; no target where bf16 is emulated."""
    native = any(flag in bl.cpu_flags() for flag in BF16_FLAGS)
    if not native:
        notes.append("this CPU has no bf16 instructions, so the --bf16 target does not apply")
    if BF16_REFUSED:
        notes.append(f"{len(BF16_REFUSED)} --bf16 run(s) trained in float32: the trainer's probe refused bfloat16 here")
    genbot, raw = bl.median(runs["genbot_bf16"]), bl.median(runs["raw"])
    if native:
        return bl.Row(f"{what}, genbot --bf16 vs raw fp32", genbot, raw, "chars/s", "ratio>=", TARGET_BF16)
    return bl.Row(f"{what}, genbot --bf16 vs raw fp32", genbot, raw, "chars/s")


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick``: 3 steps, one pair of runs)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", help=f"text file (default ${bl.CORPUS_ENV} or tiny-shakespeare)")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps per run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per side (median reported)")
    p.add_argument("--threads", type=int, help="torch threads for both sides (default 2; 1 with --quick)")
    p.add_argument("--bf16", action="store_true", help="also run genbot's trainer with bfloat16 autocast")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 steps, 1 run per side")
    p.add_argument("--genbot-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.threads = a.threads or (1 if a.quick else 2)  # quick runs must not depend on a second free core
    if a.quick:
        a.steps, a.repeats = 3, 1
    return a


def main() -> None:
    """Run the interleaved comparison and report medians and their ratio."""
    a = parse_args()
    corpus = bl.corpus_path(a.corpus)
    if a.genbot_child:
        print(json.dumps(genbot_child(corpus, a.steps, a.threads, a.bf16)))
        return
    notes = [n for n in (bl.load_warning(a.threads),) if n]
    with_raw = bl.raw_anchor() is not None
    if not with_raw:
        notes.append(bl.raw_missing_note())
    runs = interleaved(corpus, a.steps, a.threads, a.repeats, with_raw, a.bf16)
    what = f"training chars/s, LSTM 2x256 emb 64, batch 64x100, {a.threads} thread(s)"
    rows = [bl.Row(what, bl.median(runs["genbot"]), bl.median(runs["raw"]), "chars/s", "ratio>=", TARGET)]
    if a.bf16:
        rows.append(bf16_row(what, runs, notes))
    if a.quick:
        notes.append("--quick: 3 steps, one run per side; smoke test only, figures not representative")
    payload = {"corpus": bl.shown(corpus), "steps": a.steps, "repeats": a.repeats, "runs": runs, "quick": a.quick}
    bl.report(NAME, rows, payload | {"env": bl.environment(a.threads)}, notes)


if __name__ == "__main__":
    main()

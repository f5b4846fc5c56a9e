"""Model quality for a wall-clock budget: ``genbot train --seconds N`` vs the raw yardstick.

What it measures: the validation loss (nats/char) each side reaches after N seconds of training
time with the same model and optimizer settings — LSTM 2x256, emb 64, batch 64x100, AdamW at
lr 3e-3 — on the same 90%/10% split, by the same two estimates: mean cross-entropy over 50x64
random 256-char blocks from a fresh state (nanoGPT's), and the stateful loss over the whole val
text. Target: genbot's loss ≤ raw's (ratio ≤ 1.0).

Why it matters: throughput alone can hide a worse recipe. Known differences, on purpose: raw's
LR goes cosine to lr/10 over the budget; genbot's warms up for 50 steps, then cosine to 0.1x, and
genbot reports its best checkpoint by periodic evaluation (evaluation time is not training time).
The two runs go one after the other, never concurrently, each in a fresh process.

    python bench/quality.py [CORPUS] --seconds 300 [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import benchlib as bl

NAME = "quality"
CELL, LAYERS, EMB, BATCH, BLOCK, LR = "lstm", 2, 64, 64, 100, 3e-3


def genbot_command() -> list[str]:
    """The ``genbot`` console script of this interpreter, or the same entry point through ``-c``."""
    script = Path(sys.executable).parent / "genbot"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from genbot.frontends.cli import main; main()"]


def run_genbot(corpus: Path, seconds: float, hidden: int, threads: int) -> dict[str, Any] | None:
    """``genbot train --json`` for ``seconds``; its final ``done`` event (losses, steps, chars/s)."""
    with bl.scratch_dir("quality") as tmp:
        cmd = [*genbot_command(), "train", "--corpus", str(corpus), "--out", str(Path(tmp) / "model"), "--json"]
        cmd += ["--cell", CELL, "--layers", str(LAYERS), "--hidden", str(hidden), "--emb", str(EMB)]
        cmd += ["--batch", str(BATCH), "--block", str(BLOCK), "--lr", str(LR)]
        cmd += ["--seconds", str(seconds), "--threads", str(threads)]
        return bl.run_json_child(cmd, timeout=seconds * 4 + 600)


def run_raw(corpus: Path, seconds: float, hidden: int, threads: int) -> dict[str, Any] | None:
    """``raw_charrnn.py quality`` with the same model, batch, LR, budget and threads."""
    args = ["quality", str(corpus), "--seconds", str(seconds), "--batch", str(BATCH), "--block", str(BLOCK)]
    args += [*bl.arch_args(CELL, LAYERS, hidden, EMB), "--lr", str(LR), "--threads", str(threads)]
    return bl.run_raw(args, timeout=seconds * 4 + 600)


def loss_rows(gen: dict[str, Any] | None, raw: dict[str, Any] | None, label: str) -> list[bl.Row]:
    """Block and stateful val loss, each held to genbot ≤ raw."""
    losses = (gen or {}).get("losses", {})
    rows = []
    for key, what in (("val_block", "256-char blocks"), ("val_stateful", "stateful, whole val text")):
        g, r = losses.get(key), (raw or {}).get(key)
        rows.append(bl.Row(f"val loss ({what}), {label}", g, r, "nats/char", "ratio<=", 1.0))
    return rows


def info_rows(gen: dict[str, Any] | None, raw: dict[str, Any] | None) -> list[bl.Row]:
    """Steps each side fitted into the budget (context for the losses; no target)."""
    g_steps = float(gen["steps"]) if gen else None
    r_steps = float(raw["steps"]) if raw else None
    return [bl.Row("optimizer steps within the budget", g_steps, r_steps, "steps")]


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick``: 3 s budget and a 2x64 model, so evaluation is quick too)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", help=f"text file (default ${bl.CORPUS_ENV} or tiny-shakespeare)")
    p.add_argument("--seconds", type=float, default=300.0, help="training seconds per side")
    p.add_argument("--threads", type=int, help="torch threads for both sides (default 2; 1 with --quick)")
    p.add_argument("--hidden", type=int, default=256, help="units per layer (both sides)")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 s per side, hidden 64")
    a = p.parse_args()
    a.threads = a.threads or (1 if a.quick else 2)  # quick runs must not depend on a second free core
    if a.quick:
        a.seconds, a.hidden = 3.0, 64
    return a


def main() -> None:
    """Train raw, then genbot, for the same budget; compare their val losses."""
    a = parse_args()
    corpus = bl.corpus_path(a.corpus)
    notes = [n for n in (bl.load_warning(a.threads),) if n]
    raw = None
    if bl.raw_anchor() is None:
        notes.append(bl.raw_missing_note())
    else:
        bl.say(f"raw_charrnn quality: {a.seconds:g} s of training, {a.threads} thread(s) …")
        raw = run_raw(corpus, a.seconds, a.hidden, a.threads)
    bl.say(f"genbot train: {a.seconds:g} s of training, {a.threads} thread(s) …")
    gen = run_genbot(corpus, a.seconds, a.hidden, a.threads)
    label = f"LSTM 2x{a.hidden} after {a.seconds:g} s, {a.threads} thread(s)"
    notes.append("same LR schedule: cosine from lr to lr/10 over the budget (genbot: --warmup 0, its default)")
    if a.quick:
        notes.append("--quick: 3 s of training on a 2x64 model; smoke test only, losses not representative")
    kept = {k: v for k, v in gen.items() if k != "out"}  # the scratch folder it trained into is gone
    payload = {"corpus": bl.shown(corpus), "seconds": a.seconds, "hidden": a.hidden, "genbot": kept, "raw": raw}
    payload["env"] = bl.environment(a.threads)
    bl.report(NAME, loss_rows(gen, raw, label) + info_rows(gen, raw), payload, notes)


if __name__ == "__main__":
    main()

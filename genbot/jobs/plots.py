"""A job's loss curve as a PNG (matplotlib's Agg renderer: no display, no pyplot global state)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from genbot.networks.checkpoint import atomic_write

Points = list[tuple[int, float]]


def loss_points(events: Iterable[Mapping[str, Any]]) -> tuple[Points, Points]:
    """(train, val) loss by step from trainer events; a later attempt's value for a step wins."""
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for event in events:
        step = event.get("step")
        if not isinstance(step, int):
            continue
        if event.get("train_loss") is not None:
            train[step] = float(event["train_loss"])
        if event.get("event") == "eval" and event.get("val_loss") is not None:
            val[step] = float(event["val_loss"])
    return sorted(train.items()), sorted(val.items())


def write_loss_curve(train: Points, val: Points, path: Path, title: str) -> Path:
    """Draw train and validation loss against step and write the PNG atomically."""
    # Imported here: matplotlib is slow to import, and only workers draw.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", marker="o", markersize=3)
    ax.set(xlabel="step", ylabel="loss (nats/char)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())
    return path

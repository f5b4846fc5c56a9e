"""Resumable training state: latest weights, optimizer moments, RNG states, counters.

Everything is written with safetensors + JSON (no pickle), into ``<out>/checkpoint/``:
the latest model folder, ``optimizer.safetensors`` (Adam moments, RNG states, carried hidden
state) and ``state.json`` (step, elapsed time, best loss, optimizer hyperparameters).
Restoring all of it makes a resumed run continue exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from genbot.errors import CheckpointError
from genbot.networks.checkpoint import atomic_write

STATE_JSON = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass
class Counters:
    """Scalars a resumed run needs."""

    step: int = 0
    elapsed: float = 0.0  # seconds spent training (budget and LR schedule for --seconds)
    chars: int = 0  # characters trained on so far
    best_val: float = float("inf")
    window_position: int = 0  # SequentialWindows position for carried-state training
    history: list[dict[str, float]] = field(default_factory=list)  # eval points for loss curves


def save_state(
    folder: Path,
    optimizer: torch.optim.Optimizer,
    counters: Counters,
    batch_gen: torch.Generator,
    carry: tuple[torch.Tensor, ...] | None,
) -> None:
    """Write optimizer moments, RNG states and counters next to the latest weights."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batch"] = batch_gen.get_state()
    for i, t in enumerate(carry or ()):
        tensors[f"carry.{i}"] = t.detach().cpu().contiguous()
    atomic_write(folder / OPTIMIZER_FILE, st_save(tensors))
    meta = {"counters": asdict(counters), "param_groups": opt["param_groups"]}
    atomic_write(folder / STATE_JSON, json.dumps(meta).encode("utf-8"))


@dataclass
class RestoredState:
    """What ``load_state`` hands back to the trainer."""

    counters: Counters
    carry: tuple[torch.Tensor, ...] | None


def load_state(
    folder: Path, optimizer: torch.optim.Optimizer, batch_gen: torch.Generator, device: torch.device
) -> RestoredState:
    """Restore optimizer, RNGs and counters written by ``save_state``."""
    try:
        meta: dict[str, Any] = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = st_load((folder / OPTIMIZER_FILE).read_bytes())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: cannot resume ({e})") from e
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value.to(device) if value.dim() else value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    batch_gen.set_state(tensors["rng.batch"])
    carry_keys = sorted(k for k in tensors if k.startswith("carry."))
    carry = tuple(tensors[k].to(device) for k in carry_keys) or None
    return RestoredState(Counters(**meta["counters"]), carry)

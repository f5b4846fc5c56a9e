"""Validation loss, measured two ways, in nats per character.

* ``block_loss`` — mean cross-entropy over random 256-char blocks, each started from a fresh
  state. This is nanoGPT's estimate, so genbot's figures compare with its published ones.
* ``stateful_loss`` — the whole val text read once, left to right, carrying the state across
  1024-char chunks: what a model that keeps its memory actually achieves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genbot.errors import InvalidRequest
from genbot.networks.charrnn import CharRNN
from genbot.networks.vocab import Vocab

NATS_TO_BITS = 1.0 / math.log(2.0)


@torch.no_grad()
def block_loss(model: CharRNN, val: Tensor, block: int = 256, iters: int = 50, batch: int = 64) -> float:
    """Mean CE over ``iters`` batches of random val blocks with fresh state (fixed seed)."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    block = min(block, len(val) - 2)
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for _ in range(iters):
        ix = torch.randint(len(val) - block - 1, (batch,), generator=gen)
        w = val[ix[:, None] + torch.arange(block + 1)].to(device)  # (B, block + 1)
        logits, _ = model(w[:, :-1])  # (B, block, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten()).item()
    model.train(was_training)
    return total / iters


@torch.no_grad()
def stateful_loss(model: CharRNN, val: Tensor, chunk: int = 1024) -> float:
    """CE over the whole val text in one pass, carrying the state between chunks."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    state = None
    total = 0.0
    for s in range(0, len(val) - 1, chunk):
        y = val[s + 1 : s + 1 + chunk]
        x = val[s : s + len(y)]
        logits, state = model(x[None].to(device), state)  # (1, T, V)
        total += F.cross_entropy(logits[0].float(), y.to(device), reduction="sum").item()
    model.train(was_training)
    return total / (len(val) - 1)


def evaluate_text(model: CharRNN, vocab: Vocab, text: str, iters: int = 50) -> dict[str, float | int]:
    """Both val losses of ``model`` on the last 10% of ``text`` (nanoGPT's split), with counts."""
    encoded = vocab.encode(text)
    ids = encoded.ids[int(0.9 * len(encoded.ids)) :]
    if len(ids) < 3:
        raise InvalidRequest("the corpus is too short to hold a validation split")
    val = torch.tensor(ids, dtype=torch.long)
    report: dict[str, float | int] = dict(losses_report(block_loss(model, val, iters=iters), stateful_loss(model, val)))
    return report | {"val_chars": len(ids), "unknown_chars": len(encoded.dropped)}


def losses_report(block: float, stateful: float | None) -> dict[str, float]:
    """Both losses in nats and bits per char, keyed as the CLI and job rows print them."""
    out = {"val_block": round(block, 4), "val_block_bpc": round(block * NATS_TO_BITS, 4)}
    if stateful is not None:
        out["val_stateful"] = round(stateful, 4)
        out["val_stateful_bpc"] = round(stateful * NATS_TO_BITS, 4)
    return out

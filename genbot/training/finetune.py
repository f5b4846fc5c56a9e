"""Fine-tuning onto a corpus with characters the parent model never saw.

char-rnn and torch-rnn fail here (``init_from`` with a different vocabulary); genbot grows the
embedding and output rows instead. New characters get embedding rows drawn like the existing
ones, and head rows with zero weights and the lowest existing bias, so the parent's
predictions are untouched until training teaches the new characters.
"""

from __future__ import annotations

import dataclasses

import torch

from genbot.networks.charrnn import CharRNN
from genbot.networks.vocab import Vocab


def extend_vocab(parent: CharRNN, vocab: Vocab, text: str) -> tuple[CharRNN, Vocab, list[str]]:
    """A copy of ``parent`` whose vocabulary also covers ``text``, and the characters added."""
    new_vocab, added = vocab.extended(text)
    config = dataclasses.replace(parent.config, vocab_size=len(new_vocab))
    child = CharRNN(config)
    state = {k: v.detach().clone().float() for k, v in parent.state_dict().items()}
    n_old = len(vocab)
    if added:
        state["emb.weight"] = _grow_embedding(state["emb.weight"], len(added))
        state["head.weight"] = torch.cat([state["head.weight"], torch.zeros(len(added), config.hidden)])
        low = state["head.bias"].min().reshape(1)
        state["head.bias"] = torch.cat([state["head.bias"], low.expand(len(added))])
    assert state["emb.weight"].shape[0] == n_old + len(added)
    child.load_state_dict(state)
    return child, new_vocab, added


def _grow_embedding(weight: torch.Tensor, extra: int) -> torch.Tensor:
    std = weight.std().item()
    return torch.cat([weight, torch.randn(extra, weight.shape[1]) * std])

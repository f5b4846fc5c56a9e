"""Fake generators for tests of genbot and of code built on it.

* ``scripted_model(text)`` — a generator that always writes ``text`` (cycled), through the same
  ``initial_state``/``prime``/``forward``/``step`` API as a real model: front-end tests get known
  output without training anything.
* ``tiny_charrnn(chars)`` — a real ``CharRNN`` with random (seeded) weights, a few KB big.
* ``RecordingModel`` — wraps any step model and records batch sizes, prompt reads and thread
  ids, can slow steps down and fail on demand. Prompts go through the wrapped model's ``prime``
  (``CharRNN.prime``, the bfloat16 path the engine uses in production), not ``forward``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from genbot.networks.card import Architecture, ModelCard, SamplingDefaults, Weights
from genbot.networks.charrnn import Cell, CharRNN, CharRNNConfig
from genbot.networks.checkpoint import LoadedGenerator
from genbot.networks.vocab import Vocab

State = tuple[Tensor, ...]
_SURE = 1e4  # logit margin that makes every other character's probability exactly 0 in float32


class ScriptedModel:
    """A fake generator: whatever the prompt, stream i writes ``script`` from the start, cycling."""

    def __init__(self, vocab: Vocab, script: str) -> None:
        if not script:
            raise ValueError("script must not be empty")
        self.vocab_size = len(vocab)
        self.script = torch.tensor(vocab.encode_strict(script))  # (S,)

    def initial_state(self, batch: int) -> State:
        """Position 0 for every stream, shaped (1, batch, 1) like an RNN state."""
        return (torch.zeros(1, batch, 1),)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Priming ignores the prompt: the last position predicts the script's first char."""
        b, t = ids.shape
        pos = torch.zeros(b, dtype=torch.long)
        logits = self._logits_for(pos).unsqueeze(1).expand(b, t, self.vocab_size)  # (B, T, V)
        return logits, (torch.ones(1, b, 1),)

    def prime(self, ids: Tensor) -> tuple[Tensor, State]:
        """Like ``CharRNN.prime``: last-position logits (B, V) and the state after the prompt."""
        logits, state = self.forward(ids)
        return logits[:, -1], state

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """The script's next character for each stream, with certainty."""
        pos = state[0][0, :, 0].long()  # (B,)
        return self._logits_for(pos), (state[0] + 1,)

    def _logits_for(self, pos: Tensor) -> Tensor:
        target = self.script[pos % len(self.script)]  # (B,)
        logits = torch.zeros(len(pos), self.vocab_size)  # (B, V)
        logits[torch.arange(len(pos)), target] = _SURE
        return logits


class RecordingModel:
    """Wraps a step model; records what the engine asks of it and can misbehave on request."""

    def __init__(self, inner: Any, step_delay: float = 0.0) -> None:
        self.inner = inner
        self.step_delay = step_delay  # seconds to sleep in each step (slow model)
        self.fail_steps = 0  # the next this-many steps raise RuntimeError
        self.fail_primes = 0  # the next this-many prime calls raise RuntimeError
        self.batch_sizes: list[int] = []  # rows of every step call, in order
        self.threads: set[int] = set()  # threading.get_ident() of every call
        self.primed: list[int] = []  # prompt length of every prime call (how the engine reads prompts)
        self.forwarded: list[int] = []  # sequence length of every forward call

    @property
    def serving_paths(self) -> Any:
        """The wrapped model's serving paths (how many rows the engine pads a small batch to), if any."""
        return getattr(self.inner, "serving_paths", None)

    def initial_state(self, batch: int) -> State:
        """The wrapped model's zero state."""
        return cast(State, self.inner.initial_state(batch))

    def prime(self, ids: Tensor) -> tuple[Tensor, State]:
        """The wrapped model's ``prime`` (as the engine calls it), recorded, failing as configured."""
        self.threads.add(threading.get_ident())
        self.primed.append(ids.shape[1])
        if self.fail_primes > 0:
            self.fail_primes -= 1
            raise RuntimeError("injected priming failure")
        return cast(tuple[Tensor, State], self.inner.prime(ids))

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The wrapped model's forward (training, evaluation), recorded."""
        self.threads.add(threading.get_ident())
        self.forwarded.append(ids.shape[1])
        return cast(tuple[Tensor, State], self.inner.forward(ids, state))

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """The wrapped model's step, recorded, delayed or failing as configured."""
        self.threads.add(threading.get_ident())
        self.batch_sizes.append(len(ids))
        if self.step_delay:
            time.sleep(self.step_delay)
        if self.fail_steps > 0:
            self.fail_steps -= 1
            raise RuntimeError("injected step failure")
        return cast(tuple[Tensor, State], self.inner.step(ids, state))


def loaded_generator(
    model: Any, vocab: Vocab, name: str = "fake", sampling: SamplingDefaults | None = None
) -> LoadedGenerator:
    """A ``LoadedGenerator`` around any step model, with a minimal card and no files behind it."""
    card = ModelCard(
        name=name,
        architecture=Architecture(vocab_size=len(vocab)),
        weights=Weights(sha256="0" * 64),
        sampling=sampling or SamplingDefaults(),
    )
    return LoadedGenerator(network=cast(CharRNN, model), vocab=vocab, card=card, path=Path(name))


def scripted_model(script: str, extra_chars: str = "\n", name: str = "scripted") -> LoadedGenerator:
    """A loaded fake generator that writes ``script`` (cycled) for every prompt."""
    vocab = Vocab.from_text(script + extra_chars)
    return loaded_generator(ScriptedModel(vocab, script), vocab, name)


def tiny_charrnn(
    chars: str, cell: Cell = "lstm", layers: int = 2, hidden: int = 32, embedding: int = 16, seed: int = 0
) -> LoadedGenerator:
    """A real CharRNN over the characters of ``chars`` with random weights from ``seed``."""
    vocab = Vocab.from_text(chars)
    config = CharRNNConfig(vocab_size=len(vocab), cell=cell, layers=layers, hidden=hidden, embedding=embedding)
    gen = torch.Generator().manual_seed(seed)
    model = CharRNN(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)  # larger than init: peakier, more varied text
    return loaded_generator(model.eval(), vocab, name=f"tiny-{cell}")

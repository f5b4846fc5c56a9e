"""CharRNN: embedding → stacked RNN/LSTM/GRU → linear head over characters.

Two ways to run the same weights:

* ``forward(ids, state)`` runs whole sequences through the fused ``nn.LSTM``/``nn.GRU``/``nn.RNN``
  kernel — training, evaluation and priming a prompt in one call;
* ``step(ids, state)`` advances a batch of streams by one character with per-layer cell
  functions, which on a CPU is several times faster per character than calling the fused
  module on a length-1 sequence. The engine's decode loop uses this.

State is a tuple of tensors shaped (layers, batch, hidden): ``(h, c)`` for LSTM, ``(h,)``
otherwise — the same layout ``nn.LSTM`` returns, so a primed state joins a running batch as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

Cell = Literal["rnn", "lstm", "gru"]
State = tuple[Tensor, ...]

_FUSED: dict[str, Callable[..., nn.Module]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
_STEP: dict[str, Callable[..., Tensor | tuple[Tensor, Tensor]]] = {
    "rnn": torch.rnn_tanh_cell,
    "lstm": torch.lstm_cell,
    "gru": torch.gru_cell,
}


@dataclass(frozen=True)
class CharRNNConfig:
    """Architecture of a CharRNN; stored in ``plugin.toml`` next to the weights."""

    vocab_size: int  # characters in the vocabulary (rows of the embedding and the head)
    cell: Cell = "lstm"  # rnn (tanh, Elman) | lstm | gru
    layers: int = 2  # stacked recurrent layers
    hidden: int = 256  # units per recurrent layer
    embedding: int = 64  # size of the learned character embedding
    dropout: float = 0.0  # between recurrent layers and before the head (training only)

    def __post_init__(self) -> None:
        if self.cell not in _FUSED:
            raise ValueError(f"cell must be one of {sorted(_FUSED)}, not {self.cell!r}")
        for name in ("vocab_size", "layers", "hidden", "embedding"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict[str, object]:
        """Plain dict for TOML/JSON."""
        return asdict(self)


class CharRNN(nn.Module):
    """Character-level recurrent language model."""

    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.emb = nn.Embedding(c.vocab_size, c.embedding)
        inter_dropout = c.dropout if c.layers > 1 else 0.0
        self.rnn = _FUSED[c.cell](c.embedding, c.hidden, c.layers, dropout=inter_dropout, batch_first=True)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.vocab_size)

    def initial_state(self, batch: int) -> State:
        """Zero state for ``batch`` streams."""
        p = self.head.weight
        shape = (self.config.layers, batch, self.config.hidden)
        n = 2 if self.config.cell == "lstm" else 1
        return tuple(torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(n))

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits for every position of ``ids`` (B, T) → (B, T, V), and the final state."""
        x = self.emb(ids)  # (B, T, E)
        rnn_state = _to_module_state(state, self.config.cell)
        h, new_state = self.rnn(x, rnn_state)  # (B, T, H)
        logits = self.head(self.drop(h))  # (B, T, V)
        return logits, _from_module_state(new_state)

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Advance every stream by one character: ids (B,) → logits (B, V) and the next state."""
        x = self.emb(ids)  # (B, E)
        fn = _STEP[self.config.cell]
        lstm = self.config.cell == "lstm"
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(self.config.layers):
            w = self._layer_weights(layer)
            if lstm:
                h, c = fn(x, (state[0][layer], state[1][layer]), *w)  # (B, H) each
                cs.append(c)
            else:
                h = fn(x, state[0][layer], *w)  # (B, H)
            hs.append(h)
            x = h
        logits = self.head(x)  # (B, V)
        new_state = (torch.stack(hs), torch.stack(cs)) if lstm else (torch.stack(hs),)
        return logits, new_state

    def _layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r = self.rnn
        return (
            getattr(r, f"weight_ih_l{layer}"),
            getattr(r, f"weight_hh_l{layer}"),
            getattr(r, f"bias_ih_l{layer}"),
            getattr(r, f"bias_hh_l{layer}"),
        )

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters())


def _to_module_state(state: State | None, cell: str) -> Tensor | tuple[Tensor, Tensor] | None:
    if state is None:
        return None
    if cell == "lstm":
        return (state[0].contiguous(), state[1].contiguous())
    return state[0].contiguous()


def _from_module_state(state: Tensor | tuple[Tensor, Tensor]) -> State:
    return tuple(state) if isinstance(state, tuple) else (state,)

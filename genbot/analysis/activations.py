"""Run a text through a CharRNN and keep what every unit did at every character.

For each layer the fused one-layer kernel (``nn.LSTM``/``nn.GRU``/``nn.RNN`` with that layer's
own weights) gives the hidden state ``h`` at every position in one call; the gates then follow
without a Python loop, because at time ``t`` they depend only on the layer's input ``x_t`` and on
``h_{t-1}``, both known. Only the LSTM cell ``c`` needs a loop (``c_t = f_t c_{t-1} + i_t g_t``),
and that loop is elementwise over one vector. The numbers match ``CharRNN.step`` run one
character at a time (tests/test_inspect.py checks to 1e-5).

Convention: row ``t`` of every array is the state *after* reading character ``t``; ``surprise[t]``
is ``-log p(char t | chars before it)``; the first character has no prediction (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from genbot.errors import InvalidRequest
from genbot.networks.charrnn import CharRNN
from genbot.networks.vocab import Vocab

MAX_TEXT_CHARS = 20_000  # longest text an inspection reads (memory: ~6 floats per unit per char)
GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ()}
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}


@dataclass
class LayerTrace:
    """One layer's activations, each (T, H) float32: ``h``, ``c`` (LSTM only) and gates by name."""

    h: np.ndarray
    c: np.ndarray | None = None
    gates: dict[str, np.ndarray] = field(default_factory=dict)

    def kind(self, name: str) -> np.ndarray:
        """The (T, H) array of ``h``, ``c`` or a gate name; InvalidRequest if this cell lacks it."""
        if name == "h":
            return self.h
        if name == "c" and self.c is not None:
            return self.c
        if name in self.gates:
            return self.gates[name]
        known = ["h", *(["c"] if self.c is not None else []), *self.gates]
        raise InvalidRequest(f"this model has no {name!r} activations (known: {', '.join(known)})")


@dataclass
class Trace:
    """A text as the model read it: its characters, per-layer activations and per-char surprise."""

    text: str  # the characters the model read (after mapping/dropping unknown ones)
    cell: str
    layers: list[LayerTrace]
    surprise: np.ndarray  # (T,) nats; NaN at position 0
    mapped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    @property
    def hidden(self) -> int:
        """Units per layer."""
        return int(self.layers[0].h.shape[1])

    def summary(self) -> dict[str, object]:
        """Plain-data overview: sizes, mean surprise and bits per char, affected characters."""
        s = self.surprise[1:]
        mean = float(np.nanmean(s)) if s.size else math.nan
        return {
            "chars": len(self.text),
            "cell": self.cell,
            "layers": len(self.layers),
            "hidden": self.hidden,
            "mean_surprise_nats": _finite(mean),
            "bits_per_char": _finite(mean / math.log(2)),
            "mapped": self.mapped,
            "dropped": "".join(self.dropped),
        }


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def encode_text(vocab: Vocab, text: str, limit: int = MAX_TEXT_CHARS) -> tuple[list[int], dict[str, str], list[str]]:
    """Ids of ``text`` under the vocab's unknown-character policy; InvalidRequest if empty or too long."""
    if not text:
        raise InvalidRequest("the text to inspect is empty")
    if len(text) > limit:
        raise InvalidRequest(f"the text has {len(text):,} characters; inspect reads at most {limit:,}")
    enc = vocab.encode(text)
    if len(enc.ids) < 2:
        raise InvalidRequest("the text needs at least two characters the model knows")
    return enc.ids, enc.mapped, enc.dropped


@torch.inference_mode()
def trace_text(model: CharRNN, vocab: Vocab, text: str, *, gates: bool = True) -> Trace:
    """Read ``text`` from a fresh state and collect h, c, gates (if asked) and surprise per char."""
    ids, mapped, dropped = encode_text(vocab, text)
    x_ids = torch.tensor(ids, dtype=torch.long, device=model.head.weight.device)
    x = model.emb(x_ids).float()  # (T, E)
    layers: list[LayerTrace] = []
    for layer in range(model.config.layers):
        trace, x = _trace_layer(model, layer, x, gates)
        layers.append(trace)
    surprise = _surprise(model, x, x_ids)
    return Trace(vocab.decode(ids), model.config.cell, layers, surprise, mapped, dropped)


def _trace_layer(model: CharRNN, layer: int, x: Tensor, gates: bool) -> tuple[LayerTrace, Tensor]:
    """One layer over the whole sequence: its trace and its output (T, H) for the next layer."""
    w_ih, w_hh, b_ih, b_hh = (w.float() for w in model._layer_weights(layer))
    h = _fused_layer(model.config.cell, x, w_ih, w_hh, b_ih, b_hh)  # (T, H)
    h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])  # (T, H): state before each char
    if model.config.cell == "rnn":
        return LayerTrace(_np(h)), h
    pre_x = torch.addmm(b_ih, x, w_ih.t())  # (T, G*H)
    pre_h = torch.addmm(b_hh, h_prev, w_hh.t())  # (T, G*H)
    if model.config.cell == "lstm":
        acts = _lstm_gates(pre_x + pre_h)
        c = _lstm_cells(acts["i"], acts["f"], acts["g"])  # (T, H)
        kept = {k: _np(v) for k, v in acts.items()} if gates else {}
        return LayerTrace(_np(h), _np(c), kept), h
    acts = _gru_gates(pre_x, pre_h)
    return LayerTrace(_np(h), None, {k: _np(v) for k, v in acts.items()} if gates else {}), h


def _fused_layer(cell: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """Hidden states (T, H) of one recurrent layer with the given weights, from a zero state."""
    hidden = w_hh.shape[1]
    module = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](x.shape[1], hidden, 1, batch_first=True)
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    module.load_state_dict({k: v.contiguous() for k, v in params.items()}, assign=True)
    module.to(x.device)
    out, _ = module(x.unsqueeze(0))  # (1, T, H)
    return out[0]


def _lstm_gates(pre: Tensor) -> dict[str, Tensor]:
    """Gate activations from pre-activations (T, 4H) in PyTorch's order i, f, g, o."""
    i, f, g, o = pre.chunk(4, dim=1)  # each (T, H)
    return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "g": torch.tanh(g), "o": torch.sigmoid(o)}


def _lstm_cells(i: Tensor, f: Tensor, g: Tensor) -> Tensor:
    """Cell states (T, H) from gates: c_t = f_t * c_{t-1} + i_t * g_t, c_{-1} = 0."""
    ig = i * g  # (T, H)
    out = torch.empty_like(ig)
    c = torch.zeros_like(ig[0])  # (H,)
    for t in range(ig.shape[0]):
        c = torch.addcmul(ig[t], f[t], c)
        out[t] = c
    return out


def _gru_gates(pre_x: Tensor, pre_h: Tensor) -> dict[str, Tensor]:
    """GRU reset, update and candidate (T, H) each; the candidate sees r * (W_hn h + b_hn)."""
    xr, xz, xn = pre_x.chunk(3, dim=1)
    hr, hz, hn = pre_h.chunk(3, dim=1)
    r = torch.sigmoid(xr + hr)
    return {"r": r, "z": torch.sigmoid(xz + hz), "n": torch.tanh(xn + r * hn)}


def _surprise(model: CharRNN, top: Tensor, ids: Tensor) -> np.ndarray:
    """-log p(char t | before) for t ≥ 1 from the top layer's states (T, H); NaN at t = 0."""
    logits = torch.addmm(model.head.bias.float(), top, model.head.weight.float().t())  # (T, V)
    logp = torch.log_softmax(logits, dim=-1)  # (T, V)
    picked = -logp[:-1].gather(1, ids[1:, None])[:, 0]  # (T-1,)
    return np.concatenate([[math.nan], picked.cpu().numpy()]).astype(np.float32)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


Saturation = list[dict[str, tuple[list[float], list[float]]]]  # per layer: gate → (left, right) per unit


def gate_saturation(trace: Trace, low: float = 0.1, high: float = 0.9) -> Saturation:
    """Per layer and sigmoid gate: each unit's fraction of time below ``low`` and above ``high``."""
    out: Saturation = []
    for lt in trace.layers:
        per_gate = {}
        for name in SIGMOID_GATES[trace.cell]:
            if name not in lt.gates:
                raise InvalidRequest("gate statistics need a trace collected with gates")
            g = lt.gates[name]  # (T, H)
            per_gate[name] = ((g < low).mean(axis=0).tolist(), (g > high).mean(axis=0).tolist())
        out.append(per_gate)
    return out

"""Packed matrix-product kernels of torch's CPU builds, and the recurrent cell updates they share.

``CharRNN`` serves through one of several numeric paths (see ``charrnn.py``); the ones here run
its products on weights packed once by a torch kernel: FBGEMM's float16 (half the bytes of
float32 on any x86-64 CPU), oneDNN's float32 (each row's result independent of how many rows
share the call) and oneDNN's bfloat16 (fast where the CPU has bf16 instructions). Whether a
kernel exists in this torch build is probed once per process; whether it is fast is measured by
``genbot.engine.paths``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class LayerWeights:
    """One recurrent layer as torch stores it: (W_ih, W_hh, b_ih, b_hh), rows gate-major."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor
    b_hh: Tensor


@dataclass(frozen=True)
class ServingWeights:
    """What a serving path packs: the cell, every layer's weights, layer 0's input table and the head."""

    cell: str
    layers: Sequence[LayerWeights]
    table: Tensor  # (vocab, G): ``input_table``, layer 0's input product and biases per character
    head: tuple[Tensor, Tensor]  # (W (vocab, hidden), b (vocab,))


def input_table(cell: str, embedding: Tensor, layer0: LayerWeights) -> Tensor:
    """Layer 0's input gates for every character (vocab, G), its input bias (and, but for GRU, hh bias) in."""
    bias = layer0.b_ih if cell == "gru" else layer0.b_ih + layer0.b_hh
    return torch.addmm(bias, embedding, layer0.w_ih.t()).contiguous()


@functools.cache  # what the torch build has does not change while it runs
def fp16_available() -> bool:
    """Whether torch has FBGEMM's float16 packed linear (x86-64 CPU builds)."""
    return _runs(FP16)


@functools.cache
def onednn_available() -> bool:
    """Whether torch has oneDNN's packed float32 linear (the CPU builds for x86-64 and arm64)."""
    return torch.backends.mkldnn.is_available() and _runs(ONEDNN)


@functools.cache
def bf16_step_available() -> bool:
    """Whether torch has oneDNN's packed bfloat16 linear (whether it is fast here is measured)."""
    return torch.backends.mkldnn.is_available() and _runs(BF16)


def _runs(kernel: Kernel) -> bool:
    """Whether ``kernel`` packs and multiplies a 1x1 matrix in this torch build."""
    try:
        kernel.lin(torch.zeros(1, 1), kernel.pack(torch.zeros(1, 1), None))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


@dataclass(frozen=True)
class Kernel:
    """A packed matrix product: ``pack(W (out, in), bias)`` once, then ``lin(x (B, in), packed)``."""

    pack: Callable[[Tensor, Tensor | None], object]
    lin: Callable[[Tensor, object], Tensor]


def _onednn_pack(w: Tensor, b: Tensor | None) -> object:
    # The batch-size hint picks oneDNN's weight layout; with a hint of 1 a lone row takes a
    # kernel of its own (another summation order), with 64 every row count shares one.
    return (torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 64), b)


def _onednn_lin(x: Tensor, packed: object) -> Tensor:
    w, b = cast(tuple[Tensor, Tensor | None], packed)
    return cast(Tensor, torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""))


def _bf16_pack(w: Tensor, b: Tensor | None) -> object:
    # bfloat16 weights halve the bytes read per step; the bias stays float32 and is added after
    # the product, so only the product's inputs and its result are rounded to bfloat16. The
    # batch-size hint is 1 here: with 64, a 768-wide product on an AMX CPU rounded batches of 33
    # or more rows another way than smaller ones; with 1, every count from 1 to 256 agreed.
    return (torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16).contiguous(), 1), b)


def _bf16_lin(x: Tensor, packed: object) -> Tensor:
    w, b = cast(tuple[Tensor, Tensor | None], packed)
    y = cast(Tensor, torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), w, None, "none", [], "")).float()
    return y if b is None else y.add_(b)


FP16 = Kernel(
    lambda w, b: torch.ops.quantized.linear_prepack_fp16(w, b),
    lambda x, p: cast(Tensor, torch.ops.quantized.linear_dynamic_fp16(x, p)),
)
ONEDNN = Kernel(_onednn_pack, _onednn_lin)
BF16 = Kernel(_bf16_pack, _bf16_lin)  # oneDNN's bfloat16 product: fast only with bf16 instructions
KERNELS = {"fp16": FP16, "onednn": ONEDNN, "bf16": BF16}


class PackedWeights:
    """One kernel's packed copies of the weights (``FP16``, ``ONEDNN``, ``BF16``): for steps and prompt reading."""

    READ_ROWS = 64  # most rows per batched input product while reading: as many as the load-time check covers

    def __init__(self, weights: ServingWeights, kernel: Kernel, key: object = None) -> None:
        pack = kernel.pack
        cell, layers, table, head = weights.cell, weights.layers, weights.table, weights.head
        self.key = key
        self.kernel = kernel
        self.layers = len(layers)
        self.hidden = layers[0].w_hh.shape[1]
        self.table = table
        self.cell_params: list[object] = []  # per layer, for torch.quantized_lstm/gru (float16 only)
        self.step_packs: list[tuple[object, object]] = []  # per layer: (input or None, hidden)
        self.read_packs: list[tuple[object, object]] = []  # per layer: (input or None, hidden)
        # The bfloat16 path keeps the (small) head in float32: logits rounded to bfloat16 would
        # shift every sampled probability by up to a few percent, for a product that costs little.
        self.head_kernel = ONEDNN if kernel is BF16 else kernel
        self.head_pack = self.head_kernel.pack(head[0].detach(), head[1].detach())
        with torch.no_grad():
            for layer, lw in enumerate(layers):
                w_ih, w_hh, b_ih, b_hh = (t.detach() for t in (lw.w_ih, lw.w_hh, lw.b_ih, lw.b_hh))
                if cell != "rnn" and kernel is FP16:
                    self.cell_params.append(
                        torch.ops.quantized.make_quantized_cell_params_fp16(pack(w_ih, b_ih), pack(w_hh, b_hh))
                    )
                if cell == "gru":  # the hidden product keeps its own bias (inside the reset gate)
                    self.step_packs.append((pack(w_ih, b_ih) if layer else None, pack(w_hh, b_hh)))
                elif layer == 0:  # the input product (and both biases) is the table lookup
                    self.step_packs.append((None, pack(w_hh, None)))
                else:  # one product of [x, h] with [W_ih, W_hh]: one call instead of two
                    self.step_packs.append((None, pack(torch.cat([w_ih, w_hh], dim=1), b_ih + b_hh)))
                if kernel is not ONEDNN:  # only oneDNN float32 reads prompts layer by layer
                    continue
                if cell == "gru" or layer == 0:
                    self.read_packs.append(self.step_packs[-1])
                else:  # the input product apart: it runs for every position of a layer at once
                    self.read_packs.append((pack(w_ih, b_ih + b_hh), pack(w_hh, None)))

    def head(self, h: Tensor) -> Tensor:
        return self.head_kernel.lin(h, self.head_pack)

    def read(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """The fused float16 kernel over embedded prompts x (B, T, E) from ``state``."""
        if not self.cell_params:
            raise RuntimeError("no fused float16 kernel for the plain RNN cell")
        state = tuple(s.float().contiguous() for s in state)
        if len(state) == 2:  # LSTM
            out, h, c = torch.quantized_lstm(
                x, state, self.cell_params, True, self.layers, 0.0, False, False, True,
                dtype=torch.float16, use_dynamic=True,
            )  # fmt: skip
            return out, (h, c)
        out, h = torch.quantized_gru(x, state[0], self.cell_params, True, self.layers, 0.0, False, False, True)
        return out, (h,)

    def read_layerwise(self, ids: Tensor, state: State, cell: str) -> tuple[Tensor, State]:
        """Prompts ids (B, T) from ``state`` one layer at a time: outputs (B, T, H) and the new state.

        Each layer's input products for every position are a few large calls (layer 0's are the
        table), leaving one small product per position: the hidden one. A row's result depends on
        neither the other rows nor the chunking wherever the kernel's rows agree at any count.
        """
        batch, length = ids.shape
        x = self.table.index_select(0, ids.reshape(-1))  # (B*T, G): layer 0's input gates
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer, (p_in, p_h) in enumerate(self.read_packs):
            if p_in is not None:
                x = torch.cat([self.kernel.lin(part, p_in) for part in x.split(self.READ_ROWS)])
            gates_in = x.view(batch, length, -1)
            h = state[0][layer].contiguous()
            c = state[1][layer] if cell == "lstm" else None
            outs = []
            for t in range(length):
                if cell == "gru":
                    h = gru_gates(gates_in[:, t], self.kernel.lin(h, p_h), h)
                elif c is not None:
                    h, c = lstm_gates(gates_in[:, t] + self.kernel.lin(h, p_h), c)
                else:
                    h = torch.tanh(gates_in[:, t] + self.kernel.lin(h, p_h))
                outs.append(h)
            hs.append(h)
            if c is not None:
                cs.append(c)
            x = torch.stack(outs, dim=1).view(batch * length, self.hidden)
        out = x.view(batch, length, self.hidden)
        return out, ((torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),))

    def advance(self, ids: Tensor, state: State, cell: str) -> tuple[Tensor, State]:
        """One step of every layer through the packed kernel: the top layer's output and the next state."""
        lin = self.kernel.lin
        x = self.table.index_select(0, ids)  # (B, G)
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer, (p_in, p_h) in enumerate(self.step_packs):
            h_prev = state[0][layer]
            if cell == "gru":
                gi = x if p_in is None else lin(x, p_in)
                h = gru_gates(gi, lin(h_prev, p_h), h_prev)
            else:
                gates = x + lin(h_prev, p_h) if layer == 0 else lin(torch.cat([x, h_prev], dim=1), p_h)
                if cell == "lstm":
                    h, c = lstm_gates(gates, state[1][layer])
                    cs.append(c)
                else:
                    h = torch.tanh(gates)
            hs.append(h)
            x = h
        return x, ((torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),))


def lstm_gates(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """LSTM update from the summed gate pre-activations (B, 4H): input, forget, cell, output."""
    # One sigmoid over all four gates (the cell gate's share is discarded) beats three small calls.
    i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)
    hidden = c.shape[1]
    g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    c = torch.addcmul(f * c, i, g)  # (B, H)
    return o * torch.tanh(c), c


def gru_gates(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """GRU update from the input and hidden products (B, 3H) each: reset, update, new."""
    ir, iz, inn = gi.chunk(3, dim=1)
    hr, hz, hn = gh.chunk(3, dim=1)
    r = torch.sigmoid(ir + hr)
    z = torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return n + z * (h - n)  # (1 - z) * n + z * h

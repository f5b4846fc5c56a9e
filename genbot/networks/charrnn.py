"""CharRNN: embedding → stacked RNN/LSTM/GRU → linear head over characters.

Two ways to run the same weights:

* ``forward(ids, state)`` runs whole sequences through the fused ``nn.LSTM``/``nn.GRU``/``nn.RNN``
  kernel — training, evaluation and priming a prompt in one call;
* ``step(ids, state)`` advances a batch of streams by one character with per-layer cell
  functions, which on a CPU is several times faster per character than calling the fused
  module on a length-1 sequence. The engine's decode loop uses this.

Serving reads prompts with ``read``/``read_end`` (``prime`` is both at once) and decodes with
``step``, each through one of several numeric paths (``ServingPaths``): float32; a bfloat16
copy of the weights (fast only where the CPU has bf16 instructions); FBGEMM's packed float16
weights with float32 arithmetic (half the bytes of float32 on any x86-64 CPU); oneDNN's packed
float32 weights; or, for stepping, oneDNN's packed bfloat16 weights (AMX or AVX-512 BF16 make
a batch of streams about twice as fast as float32); or genbot's native kernels
(``genbot.networks.native``: float32 or float16 weights, a whole step, prompt chunk or run of
sampled characters in one C call, built where a C compiler is). With the packed and native
kernels each row's result does not depend on how many rows are in the batch, one row included,
where MKL's float32 product rounds one to three rows each their own way. Which path is fastest
depends on the machine, so ``genbot.engine.paths`` measures them when a model is loaded; an
unmeasured model uses float32. The packed torch kernels live in ``kernels.py``.

State is a tuple of tensors shaped (layers, batch, hidden): ``(h, c)`` for LSTM, ``(h,)``
otherwise — the same layout ``nn.LSTM`` returns, so a primed state joins a running batch as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import torch
import torch.nn as nn
from torch import Tensor

from genbot.networks import native
from genbot.networks.kernels import (
    KERNELS,
    LayerWeights,
    PackedWeights,
    ServingWeights,
    bf16_step_available,
    fp16_available,
    gru_gates,
    input_table,
    lstm_gates,
    onednn_available,
)

__all__ = ["CharRNN", "CharRNNConfig", "ServingPaths", "bf16_step_available", "fp16_available", "onednn_available"]

Cell = Literal["rnn", "lstm", "gru"]
State = tuple[Tensor, ...]

PrimePath = Literal["fp32", "bf16", "fp16", "onednn", "steps", "native", "native_fp16"]
StepPath = Literal["fp32", "fp16", "onednn", "bf16", "rowwise", "rowwise_fp16", "native", "native_fp16"]
PRIME_PATHS: tuple[PrimePath, ...] = get_args(PrimePath)
STEP_PATHS: tuple[StepPath, ...] = get_args(StepPath)
# Step paths whose products run on packed weights (``PackedWeights``): CPU only.
PACKED: tuple[str, ...] = ("fp16", "onednn", "bf16")
# Prompt readers on packed weights (the bf16 reader is a bfloat16 twin of the fused module instead).
PACKED_READERS: tuple[str, ...] = ("fp16", "onednn")
# Step paths that run each row of a batch alone: exact on any BLAS, since a row never meets another.
ROWWISE: dict[str, StepPath] = {"rowwise": "fp32", "rowwise_fp16": "fp16"}  # path -> kernel of one row
# Paths through the native kernels (``genbot.networks.native``), for both reading and stepping: CPU
# only, where a C compiler built them. Path -> the weight type they read.
NATIVE: dict[str, native.WeightType] = {"native": "fp32", "native_fp16": "fp16"}

_FUSED: dict[str, Callable[..., nn.Module]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def pad_rows(t: Tensor, rows: int, dim: int = 0) -> Tensor:
    """``t`` with copies of its first row along ``dim`` up to ``rows`` rows (as is if it has as many)."""
    n = t.shape[dim]
    if n >= rows:
        return t
    shape = list(t.shape)
    shape[dim] = rows - n
    return torch.cat([t, t.narrow(dim, 0, 1).expand(shape)], dim)


@dataclass(frozen=True)
class ServingPaths:
    """How a served model reads prompts and steps streams, and why (see ``genbot.engine.paths``).

    ``*_rows`` is the fewest rows a call must have for each row's result to equal the same row
    inside any larger batch: 1 when even a lone row agrees; 2, 4 or 8 when BLAS picks other
    kernels, with another summation order, for batches smaller than that (the engine then pads
    a smaller batch with copies of its first row).
    """

    prime: PrimePath = "fp32"
    step: StepPath = "fp32"
    prime_rows: int = 2
    step_rows: int = 2
    reason: str = "default: not measured"
    measured: dict[str, float] = field(default_factory=dict)  # candidate -> measured ms
    # Fast mode only (a row's result may then depend on the batch): batches of fewer than
    # ``few_below`` rows step through ``step_few``, where one kernel is fastest for a lone stream
    # (float16: fewer bytes per row) and another for many (bfloat16 on AMX: more rows per byte).
    step_few: StepPath | None = None
    few_below: int = 0
    # Fast mode only: a lone prompt is read through ``prime_lone``, the reader fastest alone, where
    # another reads a batch faster (the native kernels alone, bfloat16 for many on bf16 CPUs).
    prime_lone: PrimePath | None = None

    def step_path(self, rows: int) -> StepPath:
        """The step kernel for a batch of ``rows`` rows."""
        return self.step_few if self.step_few is not None and rows < self.few_below else self.step

    def prime_path(self, rows: int) -> PrimePath:
        """The prompt reader for ``rows`` prompts read together."""
        return self.prime_lone if self.prime_lone is not None and rows == 1 else self.prime

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON (``genbot models --json``, the on-disk cache, bench output)."""
        return asdict(self)


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
        self._params: list[nn.Parameter] | None = None
        self._step_cache: _StepWeights | None = None
        self._twin: tuple[tuple[tuple[int, int], ...], CharRNN] | None = None
        self._packed: dict[str, PackedWeights] = {}  # kernel name -> its packed weights
        self._native: dict[str, native.NativeWeights] = {}  # path -> the native kernels' weights
        self.serving_paths = ServingPaths()

    def use_paths(self, paths: ServingPaths, keep_caches: bool = False) -> None:
        """Serve through ``paths`` from now on (caches of other paths are dropped unless kept)."""
        self.serving_paths = paths
        if keep_caches:
            return
        primes = {paths.prime, paths.prime_lone or paths.prime}
        if "bf16" not in primes:
            self._twin = None
        readers = primes & set(PACKED_READERS)  # the bf16 reader is the twin, not a packed kernel
        steps = {paths.step, paths.step_few or paths.step}
        kernels = readers | {ROWWISE.get(p, p) for p in steps}
        self._packed = {k: v for k, v in self._packed.items() if k in kernels}
        self._native = {k: v for k, v in self._native.items() if k in steps | primes}

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

    def prime(self, ids: Tensor) -> tuple[Tensor, State]:
        """Read prompts ids (B, T) from a fresh state: last-position logits (B, V) and the state.

        The same computation as ``read`` from a zero state followed by ``read_end``, so a prompt
        read alone gives exactly what it gives when read in a batch, in chunks, by the engine.
        """
        h, state = self.read(ids, self.initial_state(ids.shape[0]))
        return self.read_end(h, state)

    def read(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Feed prompt chunks ids (B, T) from ``state``: last hidden output (B, H) and the new state.

        Runs the fused kernel of the serving prime path; the state comes back in that path's
        dtype and can be fed to the next chunk as is (``read_end`` turns it into a serving state).
        Fewer rows than ``serving_paths.prime_rows`` are padded so they round like a batch.
        """
        n = ids.shape[0]
        pad = self.serving_paths.prime_rows - n
        if pad > 0:
            ids = pad_rows(ids, n + pad)
            state = tuple(pad_rows(s, n + pad, dim=1) for s in state)
        path = self.serving_paths.prime_path(n)
        if path == "steps" or (path in NATIVE and self._on_cpu()):
            reader = self._native_weights(path).read if path in NATIVE else self._read_steps
            last, new_state = reader(ids, state)
            return (last[:n], tuple(s[:, :n] for s in new_state)) if pad > 0 else (last, new_state)
        if path == "fp16" and self._on_cpu():
            out, new_state = self._packed_weights("fp16").read(self.emb(ids), state)
        elif path == "onednn" and self._on_cpu():
            out, new_state = self._packed_weights("onednn").read_layerwise(ids, state, self.config.cell)
        else:
            model = self._prime_twin() if path == "bf16" else self
            dtype = model.head.weight.dtype
            x = model.emb(ids)  # (B, T, E)
            rnn_state = _to_module_state(tuple(s.to(dtype) for s in state), self.config.cell)
            out, module_state = model.rnn(x, rnn_state)  # (B, T, H)
            new_state = _from_module_state(module_state)
        if pad > 0:
            return out[:n, -1], tuple(s[:, :n] for s in new_state)
        return out[:, -1], new_state

    def read_end(self, h: Tensor, state: State) -> tuple[Tensor, State]:
        """Logits (B, V) from ``read``'s last hidden output, and its state in the serving dtype."""
        dtype = self.head.weight.dtype
        n = h.shape[0]
        path = self.serving_paths.prime_path(n)
        pad = self.serving_paths.prime_rows - n
        rows = pad_rows(h, n + pad)
        if path == "steps":
            logits = self._step_head(rows.to(dtype))[:n]
        elif path in NATIVE and self._on_cpu():
            logits = self._native_weights(path).head(h)
        elif path in PACKED_READERS and self._on_cpu():
            logits = self._packed_weights(path).head(h.to(dtype))
        else:
            head = self._prime_twin().head if path == "bf16" else self.head
            logits = head(rows.to(head.weight.dtype))[:n]
        return logits.to(dtype), tuple(s.to(dtype) for s in state)

    def _prime_twin(self) -> CharRNN:
        key = self._weights_key()
        if self._twin is None or self._twin[0] != key:
            twin = CharRNN(self.config).eval()
            halves = {k: v.detach().to(torch.bfloat16) for k, v in self.state_dict().items()}
            twin.load_state_dict(halves, assign=True)
            self._twin = (key, twin.requires_grad_(False))
        return self._twin[1]

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever any parameter is replaced or updated in place (optimizer, load_state_dict)."""
        params = self._params or list(self.parameters())
        self._params = params
        # Parameters made under inference_mode keep no version counter: their pointer must do.
        return tuple((p.data_ptr(), 0 if p.is_inference() else p._version) for p in params)

    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Advance every stream by one character: ids (B,) → logits (B, V) and the next state.

        Layer 0's input product is a lookup in a precomputed (vocab, gates) table of
        ``embedding @ W_ih^T + bias``. The rest are matrix products whose per-row results do not
        depend on the batch size (for at least ``serving_paths.step_rows`` rows), so a seeded
        stream samples the same text alone or batched with others: float32 ``addmm`` on
        pre-transposed weights, or packed weights on the fp16 (FBGEMM), onednn and bf16 paths.
        """
        path = self.serving_paths.step_path(ids.shape[0])
        if path in NATIVE and self._on_cpu():  # every layer and the head in one call
            return self._native_weights(path).step(ids, state)
        top, new_state = self._advance(ids, state)
        return self._step_head(top), new_state

    def decodes_natively(self, rows: int) -> bool:
        """Whether ``decode`` serves a batch of ``rows`` streams (its step path is a native one)."""
        return self.serving_paths.step_path(rows) in NATIVE and self._on_cpu()

    def decode(
        self, ids: Tensor, state: State, sampling: native.NativeSampling, uniforms: Tensor
    ) -> tuple[Tensor, State]:
        """S characters for every stream in one native call: feed ids (B,), sample, feed that, ...

        ``uniforms`` (B, S) are each stream's next S draws (see ``genbot.engine.sampling``);
        returns the sampled ids (B, S) and the state after feeding S inputs. Only where
        ``decodes_natively``: the sampling runs in the kernels, each row on its own.
        """
        path = self.serving_paths.step_path(ids.shape[0])
        if path not in NATIVE or not self._on_cpu():
            raise RuntimeError(f"decode needs a native step path, not {path!r}")
        return self._native_weights(path).decode(ids, state, sampling, uniforms)

    def _read_steps(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """The ``steps`` prompt reader: one ``step`` per character, without the head until the end.

        Slower than a fused kernel on long prompts, but a row's result cannot depend on the other
        rows or on how the prompt was cut into chunks wherever ``step``'s cannot: the reader that
        exact mode falls back to on a CPU whose BLAS rounds a product by its row count.
        """
        top = state[0][-1]
        for t in range(ids.shape[1]):
            top, state = self._advance(ids[:, t], state)
        return top, state

    def _advance(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """One step of every layer: the top layer's output (B, H) and the next state."""
        path = self.serving_paths.step_path(ids.shape[0])
        if path in ROWWISE:
            if ids.shape[0] > 1:
                # each row alone through its kernel: exact on any BLAS, at one small product per row
                rows = [self._advance(ids[i : i + 1], tuple(s[:, i : i + 1] for s in state)) for i in range(len(ids))]
                return torch.cat([r[0] for r in rows]), tuple(
                    torch.cat(parts, dim=1) for parts in zip(*(r[1] for r in rows), strict=True)
                )
            path = ROWWISE[path]
        if path in NATIVE and self._on_cpu():
            return self._native_weights(path).read(ids[:, None], state)
        if path in PACKED and self._on_cpu():
            return self._packed_weights(path).advance(ids, state, self.config.cell)
        w = self._step_weights()
        x = w.table.index_select(0, ids)  # (B, G): layer 0's input gates, biases included
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(self.config.layers):
            wi, wh, bi, bh = w.layers[layer]
            gi = x if layer == 0 else torch.addmm(bi, x, wi)  # (B, G)
            if self.config.cell == "lstm":
                h, c = lstm_gates(gi.addmm(state[0][layer], wh), state[1][layer])
                cs.append(c)
            elif self.config.cell == "gru":
                h = gru_gates(gi, torch.addmm(bh, state[0][layer], wh), state[0][layer])
            else:
                h = torch.tanh(gi.addmm(state[0][layer], wh))  # (B, H)
            hs.append(h)
            x = h
        return x, ((torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),))

    def _step_head(self, top: Tensor) -> Tensor:
        """Logits (B, V) from the top layer's output, through the step path's head."""
        path = self.serving_paths.step_path(top.shape[0])
        if path in ROWWISE:
            if top.shape[0] > 1:
                return torch.cat([self._step_head(top[i : i + 1]) for i in range(top.shape[0])])
            path = ROWWISE[path]
        if path in NATIVE and self._on_cpu():
            return self._native_weights(path).head(top)
        if path in PACKED and self._on_cpu():
            return self._packed_weights(path).head(top)
        w = self._step_weights()
        return torch.addmm(w.head_b, top, w.head_w)

    def _on_cpu(self) -> bool:
        return self.head.weight.device.type == "cpu"

    def _packed_weights(self, kernel: str) -> PackedWeights:
        key = self._weights_key()
        packed = self._packed.get(kernel)
        if packed is None or packed.key != key:
            packed = PackedWeights(self._serving_weights(), KERNELS[kernel], key)
            self._packed[kernel] = packed
        return packed

    def _native_weights(self, path: str) -> native.NativeWeights:
        key = self._weights_key()
        weights = self._native.get(path)
        if weights is None or weights.key != key:
            lib = native.library()
            if lib is None:
                raise RuntimeError(f"the native kernels are unavailable here: {native.unavailable_reason()}")
            weights = native.NativeWeights(lib, self._serving_weights(), NATIVE[path], key)
            self._native[path] = weights
        return weights

    def share_step_weights(self) -> None:
        """For serving: make the big matrices views of ``step``'s transposed copies (one copy, not two).

        ``forward`` still works on the views, just without the contiguous fast path; serving reads
        prompts through ``prime``'s own bfloat16 twin and generates with ``step``.
        """
        w = self._step_weights()
        with torch.no_grad():
            for layer, (wi, wh, _, _) in enumerate(w.layers):
                getattr(self.rnn, f"weight_ih_l{layer}").data = wi.t()
                getattr(self.rnn, f"weight_hh_l{layer}").data = wh.t()
            self.head.weight.data = w.head_w.t()
        w.key = self._weights_key()

    def _step_weights(self) -> _StepWeights:
        """Transposed copies of the weights for ``step``, rebuilt whenever a parameter changes."""
        key = self._weights_key()
        if self._step_cache is None or self._step_cache.key != key:
            self._step_cache = _StepWeights.build(self, key)
        return self._step_cache

    def _layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r = self.rnn
        return (
            getattr(r, f"weight_ih_l{layer}"),
            getattr(r, f"weight_hh_l{layer}"),
            getattr(r, f"bias_ih_l{layer}"),
            getattr(r, f"bias_hh_l{layer}"),
        )

    def _serving_weights(self) -> ServingWeights:
        """The weights a serving path packs (views of this model's, no copies but the table)."""
        layers = [LayerWeights(*self._layer_weights(layer)) for layer in range(self.config.layers)]
        return ServingWeights(self.config.cell, layers, self._table(), (self.head.weight, self.head.bias))

    def _table(self) -> Tensor:
        """Layer 0's input gates for every character (vocab, G): the step's first product as a lookup."""
        return input_table(self.config.cell, self.emb.weight, LayerWeights(*self._layer_weights(0)))

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters())


@dataclass
class _StepWeights:
    """Per-layer (W_ih^T, W_hh^T, bias, hh-bias) and the transposed head, contiguous for ``addmm``."""

    key: tuple[tuple[int, int], ...]
    layers: list[tuple[Tensor, Tensor, Tensor, Tensor]]
    head_w: Tensor  # (H, V)
    head_b: Tensor  # (V,)
    table: Tensor  # (vocab, G): embedding @ W_ih0^T + layer 0's input bias, one row per character

    @classmethod
    def build(cls, model: CharRNN, key: tuple[tuple[int, int], ...]) -> _StepWeights:
        with torch.no_grad():
            layers = []
            for layer in range(model.config.layers):
                w_ih, w_hh, b_ih, b_hh = model._layer_weights(layer)
                # GRU keeps the hidden bias apart: it sits inside the reset gate's product.
                bias = b_ih if model.config.cell == "gru" else b_ih + b_hh
                layers.append((w_ih.t().contiguous(), w_hh.t().contiguous(), bias.clone(), b_hh.clone()))
            table = model._table()
            return cls(key, layers, model.head.weight.t().contiguous(), model.head.bias.clone(), table)


def _to_module_state(state: State | None, cell: str) -> Tensor | tuple[Tensor, Tensor] | None:
    if state is None:
        return None
    if cell == "lstm":
        return (state[0].contiguous(), state[1].contiguous())
    return state[0].contiguous()


def _from_module_state(state: Tensor | tuple[Tensor, Tensor]) -> State:
    return tuple(state) if isinstance(state, tuple) else (state,)

"""Sampling parameters and the vectorised next-character sampler.

A seeded request must produce the same text whether it runs alone or inside a batch of 64, so
nothing here lets one row influence another:

* every stream owns its own ``random.Random(seed)`` and draws exactly one 24-bit uniform per
  character, whatever the other streams do (also for argmax rows, so the sequence never shifts);
* the sampler applies temperature, top-k and top-p per row from per-row parameter tensors and
  picks the character by inverse CDF (``cumsum`` + ``searchsorted``) for all rows at once;
  softmax, cumsum and sort work along the vocabulary of one row, so a row's result does not
  depend on how many rows there are;
* rows with and without top-k/top-p go through different paths (vocab order vs. sorted order)
  chosen by the row's own parameters — never by what else is in the batch — and are merged with
  ``torch.where``.

Why 24-bit uniforms: ``k / 2**24`` is exact in float32 and strictly below 1, so the target
``u * total`` stays strictly below the CDF's last value and ``searchsorted(right=True)`` can only
land on a character with non-zero probability (no clamping, no renormalising).

Why no rounding of logits to fp16/bf16 before sampling: it does not remove batch dependence, it
only moves it. A logit that differs by δ between batch sizes flips its rounded value with
probability ≈ δ/q and then shifts the CDF by ≈ p·q, so the chance of a different character stays
≈ p·δ. The engine instead avoids the batch-dependent BLAS path it controls (see ``batching``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from genbot.errors import InvalidRequest
from genbot.networks.native import NativeSampling

MIN_TEMPERATURE = 0.01  # below this (except 0) logits / t can overflow float32
MAX_TEMPERATURE = 100.0  # far past uniform sampling already
MAX_LENGTH_LIMIT = 100_000  # hard ceiling on max_length; callers pass a lower configured limit
MAX_STOPS = 16  # stop strings per request
MAX_STOP_CHARS = 200  # characters per stop string
SEED_BITS = 63  # seeds fit a signed 64-bit database column
UNIFORM_BITS = 24  # uniforms are k / 2**24: exact in float32 and < 1
UNIFORM_SCALE = 2.0**-UNIFORM_BITS


@dataclass(frozen=True)
class SamplingParams:
    """How one stream picks its characters; validated on construction."""

    temperature: float = 0.8  # 0 means argmax (greedy, deterministic)
    top_k: int = 0  # keep the k most likely characters; 0 = off
    top_p: float = 1.0  # keep the smallest set whose probability reaches p; 1.0 = off
    max_length: int = 400  # characters to generate (stop strings may end earlier)
    seed: int | None = None  # None: the engine picks one and reports it back
    stop: tuple[str, ...] = field(default=())  # generation ends when output ends with one of these

    def __post_init__(self) -> None:
        _check_number("temperature", self.temperature, low=0.0, high=MAX_TEMPERATURE)
        if 0.0 < self.temperature < MIN_TEMPERATURE:
            raise InvalidRequest(
                f"temperature must be 0 (argmax) or at least {MIN_TEMPERATURE}, got {self.temperature}"
            )
        _check_int("top_k", self.top_k, low=0)
        _check_number("top_p", self.top_p, low=0.0, high=1.0)
        if self.top_p <= 0.0:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        _check_int("max_length", self.max_length, low=1, high=MAX_LENGTH_LIMIT)
        if self.seed is not None:
            _check_int("seed", self.seed, low=0, high=2**SEED_BITS - 1)
        object.__setattr__(self, "stop", _checked_stops(self.stop))

    def within(self, max_length_limit: int) -> SamplingParams:
        """This object, if ``max_length`` is at most the configured limit."""
        if self.max_length > max_length_limit:
            raise InvalidRequest(f"max_length must be at most {max_length_limit}, got {self.max_length}")
        return self

    def with_seed(self) -> SamplingParams:
        """A copy with a concrete seed: this one's, or a fresh random one."""
        if self.seed is not None:
            return self
        return replace(self, seed=secrets.randbits(SEED_BITS))

    @property
    def greedy(self) -> bool:
        """Whether this stream takes the argmax."""
        return self.temperature == 0.0


def _check_number(name: str, value: object, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} must be finite, got {value}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidRequest(f"{name} must be {bound}, got {value}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidRequest(f"{name} must be {bound}, got {value}")


def _checked_stops(stop: object) -> tuple[str, ...]:
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple):
        raise InvalidRequest(f"stop must be a list of strings, got {stop!r}")
    if len(stop) > MAX_STOPS:
        raise InvalidRequest(f"at most {MAX_STOPS} stop strings, got {len(stop)}")
    for s in stop:
        if not isinstance(s, str) or not s:
            raise InvalidRequest(f"stop strings must be non-empty strings, got {s!r}")
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequest(f"stop strings must be at most {MAX_STOP_CHARS} characters")
    return tuple(stop)


class BatchSampler:
    """Per-row sampling settings of one batch as tensors; rebuilt whenever the batch changes."""

    def __init__(self, params: Sequence[SamplingParams], vocab_size: int, device: torch.device | str = "cpu") -> None:
        v = vocab_size
        greedy = [p.greedy for p in params]
        filtered = [not p.greedy and (0 < p.top_k < v or p.top_p < 1.0) for p in params]
        self.all_greedy = all(greedy)
        self.any_greedy = any(greedy)
        self.all_filtered = all(filtered)
        self.any_filtered = any(filtered)
        self.all_plain = not self.any_greedy and not self.any_filtered
        self.use_top_p = any(f and p.top_p < 1.0 for f, p in zip(filtered, params, strict=True))
        f32 = torch.float32
        # (B, 1) per-row parameters; greedy rows divide by 1 (their sample is replaced by argmax)
        self.temps = torch.tensor([p.temperature or 1.0 for p in params], dtype=f32, device=device).view(-1, 1)
        self.top_k = torch.tensor([p.top_k if 0 < p.top_k < v else v for p in params], device=device).view(-1, 1)
        # top_p 1.0 becomes inf: rounding in the cumsum must never cut the tail when top-p is off
        nucleus = [p.top_p if p.top_p < 1.0 else math.inf for p in params]
        self.top_p = torch.tensor(nucleus, dtype=f32, device=device).view(-1, 1)
        self.greedy_mask = torch.tensor(greedy, device=device)  # (B,)
        self.filtered_mask = torch.tensor(filtered, device=device)  # (B,)
        self.ranks = torch.arange(v, device=device).view(1, -1)  # (1, V)
        self._native: NativeSampling | None = None

    def native(self) -> NativeSampling:
        """The same settings as the native kernels take them (``CharRNN.decode``), each row's own."""
        if self._native is None:
            greedy = self.greedy_mask.to(torch.uint8)
            self._native = NativeSampling(self.temps.view(-1), self.top_k.view(-1), self.top_p.view(-1), greedy)
        return self._native

    def __call__(self, logits: Tensor, uniforms: Tensor) -> Tensor:
        """Next ids (B,) from logits (B, V) and one uniform in [0, 1) per row (B,)."""
        if self.all_greedy:
            return logits.argmax(-1)
        if logits.dtype != torch.float32:
            logits = logits.float()  # (B, V) sample in float32 whatever the model's dtype
        scaled = logits / self.temps  # (B, V)
        u = uniforms.view(-1, 1)  # (B, 1)
        if self.all_plain:
            return _inverse_cdf(torch.softmax(scaled, -1), u).view(-1)
        if self.all_filtered:
            return self._filtered(scaled, u)
        return self._mixed(logits, scaled, u)

    def _mixed(self, logits: Tensor, scaled: Tensor, u: Tensor) -> Tensor:
        # each row takes the path its own parameters select, so its result ignores the others
        out = _inverse_cdf(torch.softmax(scaled, -1), u).view(-1)  # (B,)
        if self.any_filtered:
            out = torch.where(self.filtered_mask, self._filtered(scaled, u), out)
        if self.any_greedy:
            out = torch.where(self.greedy_mask, logits.argmax(-1), out)
        return out

    def _filtered(self, scaled: Tensor, u: Tensor) -> Tensor:
        # stable sort: equal logits keep vocabulary order, so ties resolve the same way every time
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True, stable=True)  # (B, V) each
        probs = torch.softmax(sorted_logits, -1)  # (B, V), most likely first
        drop = self.ranks >= self.top_k  # (B, V) beyond top-k
        if self.use_top_p:
            before = probs.cumsum(-1) - probs  # (B, V) mass of the more likely characters
            drop |= before >= self.top_p  # the most likely character always survives
        pos = _inverse_cdf(probs.masked_fill(drop, 0.0), u)  # (B, 1) position in sorted order
        return order.gather(1, pos).view(-1)  # (B,)


def _inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Index (B, 1) where each row's CDF first exceeds ``u`` times its total."""
    cdf = probs.cumsum(-1)  # (B, V), unnormalised after masking
    target = u * cdf[:, -1:]  # (B, 1) strictly below the row total
    return torch.searchsorted(cdf, target, right=True)  # (B, 1)

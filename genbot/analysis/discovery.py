"""Find the units that track a feature: Pearson correlation of every unit with it, all at once.

Chance baseline: the same search against the feature *circularly shifted* by random offsets.
A shift keeps the feature's own runs and autocorrelation (a plain shuffle would not, and would
make any slowly varying unit look significant), but breaks its alignment with the text, so the
best |r| found against shifted copies is what a search over this many units finds by luck.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from genbot.analysis.activations import Trace
from genbot.analysis.features import feature_signal
from genbot.errors import InvalidRequest

KINDS = ("h", "c")


@dataclass(frozen=True)
class UnitScore:
    """One unit's correlation with a feature."""

    layer: int
    index: int
    kind: str  # "h" or "c"
    r: float

    def label(self) -> str:
        """Short name, e.g. ``L1 c#37``."""
        return f"L{self.layer} {self.kind}#{self.index}"


@dataclass
class Discovery:
    """The best units for a feature, with the chance baseline to compare them against."""

    feature: str
    chars: int
    units_scored: int
    top: list[UnitScore]
    baseline: float  # best |r| over all units against circularly shifted features
    shifts: int

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return asdict(self) | {"top": [asdict(u) | {"label": u.label()} for u in self.top]}


def _blocks(trace: Trace) -> list[tuple[int, str, np.ndarray]]:
    """Every (layer, kind, activations (T, H)) to score: h of each layer, and c for LSTMs."""
    return [
        (layer, kind, lt.kind(kind))
        for layer, lt in enumerate(trace.layers)
        for kind in KINDS
        if kind == "h" or lt.c is not None
    ]


def correlations(units: np.ndarray, signals: np.ndarray) -> np.ndarray:
    """Pearson r of each unit column (T, N) with each signal column (T, K) → (N, K); 0 where flat."""
    u = units - units.mean(axis=0)  # (T, N)
    s = signals - signals.mean(axis=0)  # (T, K)
    norms = np.outer(np.linalg.norm(u, axis=0), np.linalg.norm(s, axis=0))  # (N, K)
    cov = u.T @ s  # (N, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(norms > 1e-12, cov / norms, 0.0)
    return r


def shifted(signal: np.ndarray, shifts: int, seed: int) -> np.ndarray:
    """``shifts`` circular shifts of ``signal`` (T,) by offsets in [T/10, 9T/10] → (T, shifts)."""
    t = len(signal)
    rng = np.random.default_rng(seed)
    offsets = rng.integers(max(1, t // 10), max(2, 9 * t // 10), size=shifts)
    return np.stack([np.roll(signal, int(k)) for k in offsets], axis=1)


def discover(trace: Trace, feature: str, top_k: int = 5, shifts: int = 20, seed: int = 0) -> Discovery:
    """Score every h and c unit against ``feature`` over the trace's text; best ``top_k`` by |r|."""
    signal = feature_signal(feature, trace.text)
    if np.ptp(signal) == 0:
        raise InvalidRequest(f"feature {feature!r} never changes over this text; nothing to correlate")
    shifted_signals = shifted(signal, shifts, seed)  # (T, shifts)
    scores: list[UnitScore] = []
    baseline = 0.0
    for layer, kind, acts in _blocks(trace):  # one block at a time bounds memory at T x H
        units = acts.astype(np.float64)
        r = correlations(units, signal[:, None])[:, 0]  # (H,)
        scores += [UnitScore(layer, int(i), kind, round(float(r[i]), 4)) for i in np.argsort(-np.abs(r))[:top_k]]
        baseline = max(baseline, float(np.abs(correlations(units, shifted_signals)).max()))
    top = sorted(scores, key=lambda u: -abs(u.r))[:top_k]
    units_scored = trace.hidden * len(_blocks(trace))
    return Discovery(feature, len(trace.text), units_scored, top, round(baseline, 4), shifts)

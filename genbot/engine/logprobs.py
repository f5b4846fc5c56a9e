"""Per-character log-probabilities of generated text (OpenAI's ``logprobs`` / ``top_logprobs``).

A char-RNN's distribution over the next character is all there is, so the scores are exact for
the model: :class:`CharScorer` reads the prompt the stream was primed with, then each piece of
output in order, carrying the state, and reports for every character its log-probability under
the model's own distribution (temperature 1, before top-k/top-p) and the most likely
alternatives. It runs the model's fused forward pass in float32 beside the engine, so it never
touches the batch the engine steps (scores agree with the sampler's logits to rounding).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from genbot.networks.charrnn import State
from genbot.networks.checkpoint import LoadedGenerator

MAX_TOP = 20  # OpenAI's own cap on top_logprobs


@dataclass(frozen=True)
class CharLogprob:
    """One generated character, its log-probability and the ``top`` alternatives (best first)."""

    char: str
    logprob: float
    top: list[tuple[str, float]]


class CharScorer:
    """Scores one stream's output piece by piece (call :meth:`score` with each new chunk, in order)."""

    def __init__(self, loaded: LoadedGenerator, prime_ids: list[int], top: int = 0) -> None:
        self.loaded = loaded
        self.prime_ids = prime_ids
        self.top = max(0, min(top, MAX_TOP))
        self._state: State | None = None
        self._next: torch.Tensor | None = None  # log-probabilities of the next character (V,)
        self._lock = threading.Lock()  # score() runs in worker threads; chunks must stay in order

    def score(self, text: str) -> list[CharLogprob]:
        """Log-probabilities of ``text``'s characters, continuing from the text scored before."""
        if not text:
            return []
        with self._lock, torch.inference_mode():
            index = self.loaded.vocab.index
            ids = [index[c] for c in text]  # generated text only holds vocabulary characters
            if self._next is None:
                primed, self._state = self._read(self.prime_ids, None)
                self._next = primed[-1]
            later, state = self._read(ids, self._state)
            rows = torch.cat([self._next.unsqueeze(0), later[:-1]]) if len(ids) > 1 else self._next.unsqueeze(0)
            self._next, self._state = later[-1], state
            picked = rows.gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1).tolist()
            chars = self.loaded.vocab.chars
            tops: list[list[tuple[str, float]]] = [[] for _ in ids]
            if self.top:
                values, which = rows.topk(min(self.top, rows.shape[1]), dim=1)
                tops = [
                    [(chars[j], v) for j, v in zip(row_ids, row_values, strict=True)]
                    for row_ids, row_values in zip(which.tolist(), values.tolist(), strict=True)
                ]
            return [CharLogprob(c, lp, t) for c, lp, t in zip(text, picked, tops, strict=True)]

    def _read(self, ids: list[int], state: State | None) -> tuple[torch.Tensor, State]:
        """Log-softmax after each of ``ids`` (T, V) and the state after the last."""
        model = self.loaded.network
        device = model.head.weight.device
        logits, state = model(torch.tensor([ids], device=device), state)
        return torch.log_softmax(logits[0].float(), dim=-1).cpu(), state

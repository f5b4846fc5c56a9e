"""Corpus BLEU-1..4 (Papineni et al. 2002) over tokenised captions with several references each.

Clipped n-gram precisions summed over the corpus, a brevity penalty against the reference
length closest to each candidate, no smoothing; BLEU-n is the geometric mean of precisions 1..n.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    """``{"bleu1": …, …, "bleu4": …}`` for candidates against their lists of references."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate")
    matched, total = [0] * 4, [0] * 4
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        cand_len += len(cand)
        ref_len += min((len(r) for r in refs), key=lambda n: (abs(n - len(cand)), n), default=0)
        for n in range(1, 5):
            counts = _ngrams(cand, n)
            best: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                best |= _ngrams(ref, n)
            matched[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            total[n - 1] += max(len(cand) - n + 1, 0)
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / max(cand_len, 1))
    scores = {}
    for n in range(1, 5):
        precisions = [matched[k] / total[k] if total[k] else 0.0 for k in range(n)]
        log_mean = sum(math.log(p) for p in precisions) / n if min(precisions) > 0 else -math.inf
        scores[f"bleu{n}"] = bp * math.exp(log_mean) if log_mean > -math.inf else 0.0
    return scores

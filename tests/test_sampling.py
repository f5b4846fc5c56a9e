"""SamplingParams validation and the batch-independent inverse-CDF sampler."""

from __future__ import annotations

import math

import pytest
import torch

from genbot.engine.sampling import UNIFORM_SCALE, BatchSampler, SamplingParams
from genbot.errors import InvalidRequest

V = 40


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3  # (B, V)


def _uniforms(rows: int, seed: int = 1) -> torch.Tensor:
    k = torch.randint(0, 2**24, (rows,), generator=torch.Generator().manual_seed(seed))
    return k.float() * UNIFORM_SCALE  # (B,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"temperature": 1e-9},
        {"temperature": "hot"},
        {"top_k": -1},
        {"top_k": 2.5},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_p": math.nan},
        {"max_length": 0},
        {"max_length": True},
        {"seed": -1},
        {"seed": 2**64},
        {"stop": ("",)},
        {"stop": (1,)},
        {"stop": ("x",) * 100},
    ],
)
def test_nonsense_params_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_max_length_limit_is_passed_in() -> None:
    params = SamplingParams(max_length=500)
    assert params.within(500) is params
    with pytest.raises(InvalidRequest, match="at most 100"):
        params.within(100)


def test_stop_accepts_a_list_or_one_string() -> None:
    assert SamplingParams(stop=["a", "bc"]).stop == ("a", "bc")  # type: ignore[arg-type]
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)  # type: ignore[arg-type]


def test_seed_is_chosen_when_missing_and_kept_when_given() -> None:
    assert SamplingParams(seed=7).with_seed().seed == 7
    chosen = SamplingParams().with_seed().seed
    assert isinstance(chosen, int) and 0 <= chosen < 2**63


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0, top_k=1),
        SamplingParams(temperature=2.0, top_p=1e-6),
    ],
    ids=["temperature-0", "top-k-1", "tiny-top-p"],
)
def test_greedy_equivalents_take_the_argmax(params: SamplingParams) -> None:
    logits = _logits(16)
    out = BatchSampler([params] * 16, V)(logits, _uniforms(16))
    assert torch.equal(out, logits.argmax(-1))


def test_top_k_only_picks_the_k_most_likely() -> None:
    logits = _logits(1).expand(2000, V)
    out = BatchSampler([SamplingParams(temperature=1.5, top_k=3)] * 2000, V)(logits, _uniforms(2000))
    assert set(out.tolist()) == set(logits[0].topk(3).indices.tolist())


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = _logits(1)
    probs = torch.softmax(logits[0], -1)
    order = probs.argsort(descending=True)
    nucleus = int((probs[order].cumsum(0) < 0.6).sum()) + 1  # characters needed to reach 0.6
    out = BatchSampler([SamplingParams(temperature=1.0, top_p=0.6)] * 3000, V)(logits.expand(3000, V), _uniforms(3000))
    assert set(out.tolist()) == set(order[:nucleus].tolist())


def test_inverse_cdf_follows_the_distribution() -> None:
    logits = _logits(1)
    n = 20000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # an even grid of uniforms
    out = BatchSampler([SamplingParams(temperature=1.0)] * n, V)(logits.expand(n, V), u.float())
    counts = torch.bincount(out, minlength=V).double() / n
    assert torch.allclose(counts, torch.softmax(logits[0].double(), -1), atol=2 / n)


def test_zero_probability_chars_are_never_picked_even_at_the_top_uniform() -> None:
    logits = torch.full((1, V), -1e4)
    logits[0, :3] = torch.tensor([1.0, 2.0, 3.0])  # every other char has probability exactly 0
    top = torch.tensor([(2**24 - 1) * UNIFORM_SCALE])
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=1.0, top_k=2)):
        assert BatchSampler([params], V)(logits, top).item() < 3


def test_each_row_gives_the_same_char_alone_and_in_any_mixed_batch() -> None:
    kinds = [
        SamplingParams(temperature=0.8),
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.3, top_k=5),
        SamplingParams(temperature=0.7, top_p=0.9),
        SamplingParams(temperature=1.0, top_k=10, top_p=0.5),
    ]
    params = [kinds[i % len(kinds)] for i in range(64)]
    logits, u = _logits(64), _uniforms(64)
    batched = BatchSampler(params, V)(logits, u)
    for i in range(64):
        alone = BatchSampler([params[i]], V)(logits[i : i + 1], u[i : i + 1])
        assert alone.item() == batched[i].item(), f"row {i} ({params[i]})"

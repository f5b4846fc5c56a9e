"""The trainer: learning, resuming, fine-tuning onto new characters, and bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from genbot.errors import CorpusError, InvalidRequest
from genbot.networks.checkpoint import load_model
from genbot.training import trainer
from genbot.training.trainer import TrainConfig, train

TINY = {"layers": 1, "hidden": 48, "embedding": 16, "block": 32, "batch": 16, "eval_iters": 2, "final_eval_iters": 2}


def _cfg(**kw: Any) -> TrainConfig:
    return TrainConfig(**(TINY | kw))


def test_loss_falls_and_best_model_is_saved(corpus_file: Path, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    result = train(_cfg(steps=120, lr=1e-2, eval_every=40), corpus_file, tmp_path / "m", sink=events.append)
    vocab_size = events[0]["vocab"]
    assert result.losses["val_block"] < 0.6 * math.log(vocab_size)
    assert result.losses["val_stateful"] < 0.6 * math.log(vocab_size)
    assert result.losses["val_block_bpc"] == pytest.approx(result.losses["val_block"] / math.log(2), abs=1e-3)
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [40, 80, 120]
    assert all(len(e["sample"]) == 200 for e in evals)
    loaded = load_model(tmp_path / "m")
    assert loaded.card.metrics["val_block"] == result.losses["val_block"]
    assert loaded.card.training["steps"] == 120


@pytest.mark.parametrize("carry_state", [False, True])
def test_resume_equals_uninterrupted(corpus_file: Path, tmp_path: Path, carry_state: bool) -> None:
    cfg = _cfg(steps=40, eval_every=10, dropout=0.2, carry_state=carry_state, layers=2)
    train(cfg, corpus_file, tmp_path / "straight")

    def crash_at_20(event: dict[str, Any]) -> None:
        if event["event"] == "eval" and event["step"] == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, corpus_file, tmp_path / "resumed", sink=crash_at_20)
    events: list[dict[str, Any]] = []
    train(cfg, corpus_file, tmp_path / "resumed", sink=events.append, resume=True)
    assert events[0]["resumed_at_step"] == 20
    a = load_model(tmp_path / "straight" / "checkpoint").network.state_dict()
    b = load_model(tmp_path / "resumed" / "checkpoint").network.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fine_tune_extends_vocabulary_with_new_characters(corpus_file: Path, tmp_path: Path) -> None:
    train(_cfg(steps=30), corpus_file, tmp_path / "parent")
    parent = load_model(tmp_path / "parent")
    new_corpus = tmp_path / "new.txt"
    new_corpus.write_text(corpus_file.read_text(encoding="utf-8")[:6000] + "é{}[]§ " * 300, encoding="utf-8")
    result = train(_cfg(steps=30, parent=str(tmp_path / "parent")), new_corpus, tmp_path / "child")
    assert sorted(result.added_chars) == sorted("é{}[]§")
    child = load_model(tmp_path / "child")
    assert len(child.vocab) == len(parent.vocab) + 6
    assert child.vocab.chars[: len(parent.vocab)] == parent.vocab.chars
    assert child.card.training["added_chars"] == "".join(result.added_chars)


def test_fine_tune_keeps_parent_predictions_before_training(corpus_file: Path, tmp_path: Path) -> None:
    from genbot.training.finetune import extend_vocab

    train(_cfg(steps=10), corpus_file, tmp_path / "parent")
    parent = load_model(tmp_path / "parent")
    child, vocab, added = extend_vocab(parent.network, parent.vocab, "zzé")
    ids = torch.tensor([parent.vocab.encode("ROMEO: the").ids])
    with torch.no_grad():
        p_old = torch.softmax(parent.network(ids)[0], -1)
        p_new = torch.softmax(child.eval()(ids)[0], -1)
    assert sorted(added) == ["z", "é"] and len(vocab) == len(parent.vocab) + len(added)
    n_old = len(parent.vocab)
    kept = p_new[..., :n_old]  # (1, T, V_old): the child's probabilities of the parent's characters
    torch.testing.assert_close(kept.sum(-1), torch.ones(1, ids.shape[1]), atol=0.05, rtol=0)  # new chars: rare
    # Same predictions: among the parent's characters, the child's distribution is the parent's.
    torch.testing.assert_close(kept / kept.sum(-1, keepdim=True), p_old, atol=1e-5, rtol=1e-4)
    assert torch.equal(kept.argmax(-1), p_old.argmax(-1))


def test_epoch_budget_counts_steps(corpus_file: Path, tmp_path: Path) -> None:
    result = train(_cfg(epochs=1.0), corpus_file, tmp_path / "m")
    n_train = int(0.9 * len(corpus_file.read_text(encoding="utf-8")))
    assert result.steps == math.ceil(n_train / (16 * 32))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"caf\xe9 latin-1 text", "not UTF-8"),
        (b"   \n\n  ", "whitespace"),
        (b"too short", "too short"),
    ],
)
def test_bad_corpora_are_rejected_clearly(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        train(_cfg(steps=5), path, tmp_path / "m")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hidden": 0}, "--hidden"),
        ({"lr": -1.0}, "--lr"),
        ({"dropout": 1.0}, "--dropout"),
        ({"steps": 5, "seconds": 3.0}, "exactly one budget"),
        ({"steps": 0}, "positive"),
        ({"cell": "transformer"}, "--cell"),
    ],
)
def test_nonsense_hyperparameters_are_rejected(
    corpus_file: Path, tmp_path: Path, override: dict[str, Any], message: str
) -> None:
    cfg = _cfg(**({"steps": 5} | override))
    with pytest.raises(InvalidRequest, match=message):
        train(cfg, corpus_file, tmp_path / "m")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_that_would_be_slower_is_refused_and_float32_trains(
    corpus_file: Path, tmp_path: Path, cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer, "BF16_SLOWDOWN_ALLOWED", 0.0)  # any bfloat16 pass counts as too slow
    events: list[dict[str, Any]] = []
    result = train(_cfg(cell=cell, steps=6, eval_every=6, bf16=True), corpus_file, tmp_path / "m", sink=events.append)
    assert math.isfinite(result.losses["val_block"])
    assert events[0]["bf16"] is False and events[0]["bf16_refused"]
    assert load_model(tmp_path / "m").card.training["bf16_used"] is False


def test_bf16_trains_in_bfloat16_where_it_runs(
    corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer, "BF16_SLOWDOWN_ALLOWED", math.inf)  # keep it however slow (emulated)
    events: list[dict[str, Any]] = []
    train(_cfg(cell="gru", steps=4, eval_every=4, bf16=True), corpus_file, tmp_path / "m", sink=events.append)
    assert events[0]["bf16"] is True and events[0]["bf16_refused"] is None
    assert load_model(tmp_path / "m").card.training["bf16_used"] is True

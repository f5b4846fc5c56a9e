"""The three bundled generators: they load, write in their corpus's style, and fine-tune onto new text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from genbot.config import bundled_plugins_dir
from genbot.networks.checkpoint import load_model
from genbot.training.trainer import TrainConfig, train
from genbot.training.trainer import sample_text as sample
from tests.helpers import make_corpus_text

BUNDLED = bundled_plugins_dir()


@pytest.mark.parametrize(
    ("name", "style"),
    [
        ("shakespeare", re.compile(r"\n[A-Z][A-Za-z ]+:\n")),  # speaker lines like "ROMEO:"
        ("latex", re.compile(r"\\(begin|end|label|ref)\{")),
        ("linux", re.compile(r"(;\n|\{\n|\bstruct |\bint |\breturn\b)")),
    ],
)
def test_bundled_model_loads_and_writes_in_its_style(name: str, style: re.Pattern[str]) -> None:
    loaded = load_model(BUNDLED / name)
    assert loaded.card.name == name
    assert loaded.card.metrics["val_block"] < {"shakespeare": 1.47, "latex": 0.9, "linux": 1.3}[name]
    text = sample(loaded.network, loaded.vocab, 600, seed=0)
    assert style.search(text), text


def test_fine_tuning_a_bundled_model_grows_its_vocabulary(tmp_path: Path) -> None:
    corpus = tmp_path / "new.txt"
    corpus.write_text(make_corpus_text(6000) + "Café naïve — «ça» ¿qué? " * 40, encoding="utf-8")
    parent = load_model(BUNDLED / "shakespeare")
    cfg = TrainConfig(
        parent=str(BUNDLED / "shakespeare"), steps=3, batch=4, block=32, eval_iters=1, final_eval_iters=1, threads=1
    )
    result = train(cfg, corpus, tmp_path / "child")
    child = load_model(tmp_path / "child")
    new = set(result.added_chars)
    assert new == set("éï—«»¿ç") - set(parent.vocab.chars)
    assert len(child.vocab) == len(parent.vocab) + len(new)
    assert child.vocab.chars[: len(parent.vocab)] == parent.vocab.chars
    ids = torch.tensor([child.vocab.encode("Café «ça»").ids])
    assert not child.vocab.encode("Café «ça»").dropped
    with torch.no_grad():
        assert torch.isfinite(child.network(ids)[0]).all()

"""Shared fixtures. Tests never touch the user's real folders: every path is under tmp_path."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

# Serving and tests use few torch threads: a second busy process makes a 2-thread stepper slow.
torch.set_num_threads(1)


def make_corpus_text(n_chars: int = 20_000, seed: int = 0) -> str:
    """A small, learnable corpus: short dialogue lines with a few names and words."""
    rng = random.Random(seed)
    names = ["ROMEO", "JULIET", "NURSE", "TYBALT"]
    words = "the and to of my thou art love night day sweet fair good lord come go now".split()
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = f"{rng.choice(names)}:\n" + " ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + ".\n\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)[:n_chars]


@pytest.fixture
def corpus_text() -> str:
    """Text of a small generated corpus."""
    return make_corpus_text()


@pytest.fixture
def corpus_file(tmp_path: Path, corpus_text: str) -> Path:
    """A small generated corpus written to a UTF-8 file."""
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep genbot's data folder and settings inside the test's tmp_path."""
    for key in list(os.environ):
        if key.startswith("GENBOT_") and key != "GENBOT_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("GENBOT_DATA_DIR", str(tmp_path / "data"))

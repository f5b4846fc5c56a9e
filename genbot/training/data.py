"""Training text: validation of corpus files, the train/val split and batch windows.

The split is nanoGPT's (first 90% train, last 10% val) so val losses compare with its figures.
Two ways to cut batches:

* ``random_windows`` — independent random windows each step (nanoGPT, and the raw baseline);
* ``SequentialWindows`` — the train text cut into ``batch`` contiguous lanes read left to right,
  so the hidden state can be carried (detached) from one window to the next, as char-rnn does
  with truncated backpropagation through time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from genbot.errors import CorpusError
from genbot.networks.vocab import Vocab

# Control characters other than tab/newline/CR/form feed are the signature of a binary file.
_ALLOWED_CONTROL = {"\t", "\n", "\r", "\f", "\v"}
DEFAULT_MAX_BYTES = 200 * 1024 * 1024


def read_corpus(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Read a UTF-8 text corpus, rejecting missing, empty, huge, binary or non-UTF-8 files."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CorpusError(f"{path}: the corpus is empty")
    if size > max_bytes:
        raise CorpusError(f"{path}: {size:,} bytes is over the {max_bytes:,}-byte corpus limit")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise CorpusError(f"{path}: looks like a binary file (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from e
    check_text(text, str(path))
    return text


def check_text(text: str, where: str = "corpus") -> None:
    """Reject text that is empty or mostly control characters."""
    if not text.strip():
        raise CorpusError(f"{where}: the corpus holds only whitespace")
    controls = sum(1 for c in text[:100_000] if ord(c) < 32 and c not in _ALLOWED_CONTROL)
    if controls > 0.01 * min(len(text), 100_000):
        raise CorpusError(f"{where}: looks like a binary file ({controls} control characters)")


@dataclass
class CorpusSplit:
    """A corpus as id tensors, split for training and validation."""

    train: Tensor  # (N_train,) int64
    val: Tensor  # (N_val,) int64
    vocab: Vocab


def split_corpus(text: str, vocab: Vocab, block: int, val_fraction: float = 0.1) -> CorpusSplit:
    """Encode ``text`` and split it: first (1 - val_fraction) train, the rest val."""
    ids = torch.tensor(vocab.encode_strict(text), dtype=torch.long)
    n_train = int((1.0 - val_fraction) * len(ids))
    train, val = ids[:n_train], ids[n_train:]
    if len(train) < block + 2:
        raise CorpusError(
            f"the corpus is too short: {len(text):,} chars leave {len(train):,} for training, "
            f"fewer than one window of {block} chars (lower --block or use more text)"
        )
    if len(val) < 2:
        raise CorpusError(f"the corpus is too short to hold out a validation split ({len(text):,} chars)")
    return CorpusSplit(train, val, vocab)


def random_windows(data: Tensor, batch: int, block: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random windows: inputs and next-char targets, each (batch, block)."""
    ix = torch.randint(len(data) - block - 1, (batch,), generator=gen)
    w = data[ix[:, None] + torch.arange(block + 1)]  # (B, block + 1)
    return w[:, :-1], w[:, 1:]


class SequentialWindows:
    """Contiguous lanes over the text, read one window at a time (for carried state)."""

    def __init__(self, data: Tensor, batch: int, block: int) -> None:
        lane = (len(data) - 1) // batch
        if lane < block:
            raise CorpusError(f"the corpus is too short for {batch} lanes of {block} chars; lower --batch or --block")
        self.inputs = data[: lane * batch].view(batch, lane)  # (B, lane)
        self.targets = data[1 : lane * batch + 1].view(batch, lane)  # (B, lane)
        self.block = block
        self.windows_per_epoch = lane // block
        self.position = 0

    def next(self) -> tuple[Tensor, Tensor, bool]:
        """The next window; the flag says it starts a new pass (carried state must reset)."""
        wrapped = self.position >= self.windows_per_epoch
        if wrapped:
            self.position = 0
        s = self.position * self.block
        self.position += 1
        return self.inputs[:, s : s + self.block], self.targets[:, s : s + self.block], wrapped or s == 0

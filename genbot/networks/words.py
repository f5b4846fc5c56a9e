"""Word vocabulary for captions: ``<PAD> <START> <END> <UNK>`` then words by frequency, stored as JSON.

Captions are lower-cased and split into words and punctuation marks; a word seen fewer than
``min_count`` times in the training captions is read as ``<UNK>``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from genbot.errors import CheckpointError

PAD, START, END, UNK = "<PAD>", "<START>", "<END>", "<UNK>"
SPECIALS = (PAD, START, END, UNK)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(caption: str) -> list[str]:
    """Lower-case words and punctuation marks of ``caption``."""
    return _TOKEN.findall(caption.lower())


def detokenize(words: Iterable[str]) -> str:
    """Words joined by spaces, with no space before punctuation."""
    text = " ".join(words)
    return re.sub(r" ([,.;:!?])", r"\1", text)


class WordVocab:
    """Bijection between words and ids; ids 0..3 are the special tokens."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words: list[str] = list(words)
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError(f"a word vocabulary starts with {', '.join(SPECIALS)}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary has duplicate words")
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> WordVocab:
        """Words of ``captions`` seen at least ``min_count`` times, most frequent first."""
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *(w for w in kept if w not in SPECIALS)])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad(self) -> int:
        """Id of ``<PAD>``."""
        return 0

    @property
    def start(self) -> int:
        """Id of ``<START>``."""
        return 1

    @property
    def end(self) -> int:
        """Id of ``<END>``."""
        return 2

    @property
    def unk(self) -> int:
        """Id of ``<UNK>``."""
        return 3

    def encode(self, caption: str) -> list[int]:
        """``<START>``, the caption's word ids (``<UNK>`` for unknown words), ``<END>``."""
        return [self.start, *(self.index.get(w, self.unk) for w in tokenize(caption)), self.end]

    def decode(self, ids: Iterable[int]) -> str:
        """Caption text of ``ids``, stopping at ``<END>`` and leaving out ``<START>``/``<PAD>``."""
        words: list[str] = []
        for i in ids:
            if i == self.end:
                break
            if i not in (self.start, self.pad):
                words.append(self.words[i])
        return detokenize(words)

    def to_json(self) -> str:
        """JSON form: ``{"words": [...]}``."""
        return json.dumps({"words": self.words}, ensure_ascii=False)

    @classmethod
    def load(cls, path: Path) -> WordVocab:
        """Read ``vocab.json``, failing with a clear message on anything malformed."""
        try:
            return cls(json.loads(path.read_text(encoding="utf-8"))["words"])
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing vocabulary file") from e
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: malformed word vocabulary ({e})") from e

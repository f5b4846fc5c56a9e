"""Character vocabulary over Unicode code points, stored as JSON.

Unknown-character policy (prompts may hold characters a model never saw):

1. a character in the vocabulary is used as is;
2. otherwise it is *mapped* to a look-alike the vocabulary has: typographic quotes, dashes and
   spaces to their ASCII forms, then accented letters to their base letter (NFKD);
3. otherwise it is *dropped* from what the model reads.

The caller gets both lists back (``Encoded.mapped`` / ``Encoded.dropped``) so front ends can
tell the user which characters were affected.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from genbot.errors import CheckpointError

# Look-alikes tried before NFKD folding; typographic forms are common in pasted prompts.
_LOOKALIKES = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\t": " ",
    "\r": "",
}


@dataclass
class Encoded:
    """A prompt turned into ids, with the characters the policy had to touch."""

    ids: list[int]
    mapped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    @property
    def affected(self) -> bool:
        """Whether any prompt character was mapped or dropped."""
        return bool(self.mapped or self.dropped)


class Vocab:
    """Bijection between characters and ids, in a fixed order."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = list(chars)
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary has duplicate characters")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("vocabulary entries must be single code points")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """The sorted set of characters in ``text``."""
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self.index

    def encode_strict(self, text: str) -> list[int]:
        """Ids of ``text``; every character must be in the vocabulary (training data)."""
        index = self.index
        return [index[c] for c in text]

    def encode(self, text: str) -> Encoded:
        """Ids of ``text`` under the unknown-character policy of this module."""
        out = Encoded(ids=[])
        for ch in text:
            if ch in self.index:
                out.ids.append(self.index[ch])
                continue
            sub = self._lookalike(ch)
            if sub is None:
                out.dropped.append(ch)
                continue
            out.mapped[ch] = sub
            out.ids.extend(self.index[c] for c in sub)
        return out

    def _lookalike(self, ch: str) -> str | None:
        folded = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        candidates = [_LOOKALIKES[ch]] if ch in _LOOKALIKES else []
        if folded:
            candidates.append(folded)
        for cand in candidates:
            if cand != ch and all(c in self.index for c in cand):
                return cand
        return None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids."""
        chars = self.chars
        return "".join(chars[i] for i in ids)

    def extended(self, text: str) -> tuple[Vocab, list[str]]:
        """This vocabulary plus the characters of ``text`` it lacks (appended, so old ids stay)."""
        new = sorted(set(text) - set(self.chars))
        return Vocab(self.chars + new), new

    def to_json(self) -> str:
        """JSON form: ``{"chars": [...]}``, one code point per entry."""
        return json.dumps({"chars": self.chars}, ensure_ascii=False)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """Read ``vocab.json``, failing with a clear message on anything malformed."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["chars"])
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing vocabulary file") from e
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: malformed vocabulary ({e})") from e

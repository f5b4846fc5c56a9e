"""Captioner: a small CNN encoder → image features that condition an LSTM word decoder (Show and Tell).

The decoder's layers are a :class:`CharRNN` over word ids (embedding, LSTM, head). The image
feature vector is projected to every decoder layer's initial ``(h, c)`` and, projected to the
embedding size, added to every step's input word embedding ("par-inject"): with the image only
in the initial state (Show and Tell's "init-inject") the decoder learned the caption language
first and took ~1,000 steps to start reading the image; with it at every step it does at once.
Decoding runs from ``<START>`` until ``<END>`` (or ``max_words``) by beam search (default width 3)
or seeded temperature sampling, and returns captions with their log-probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

from genbot.networks.charrnn import CharRNN, CharRNNConfig, State


@dataclass(frozen=True)
class CaptionerConfig:
    """Architecture of a Captioner; stored in ``plugin.toml`` (``[architecture]`` + ``[encoder]``)."""

    vocab_size: int  # words in the vocabulary, the four special tokens included
    image_size: int = 64  # images are resized to image_size x image_size RGB
    channels: tuple[int, ...] = (24, 48, 64, 96)  # output channels of each conv block (each halves the size)
    feature: int = 256  # size of the image feature vector
    layers: int = 1  # stacked LSTM layers in the decoder
    hidden: int = 256  # units per decoder layer
    embedding: int = 64  # size of the learned word embedding
    dropout: float = 0.1  # on the image feature and inside the decoder (training only)
    max_words: int = 20  # longest caption decoding produces, <END> excluded

    def __post_init__(self) -> None:
        if self.image_size % (2 ** len(self.channels)) or self.image_size < 2 ** len(self.channels):
            raise ValueError("image_size must be a multiple of 2 ** (number of conv blocks)")
        for name in ("vocab_size", "feature", "layers", "hidden", "embedding", "max_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def decoder_config(self) -> CharRNNConfig:
        """The CharRNN the decoder is."""
        return CharRNNConfig(self.vocab_size, "lstm", self.layers, self.hidden, self.embedding, self.dropout)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for TOML/JSON."""
        return asdict(self)


@dataclass
class Caption:
    """One decoded caption: its text, word ids (no specials) and log-probability under the model."""

    text: str
    ids: list[int]
    logprob: float
    words: list[str] = field(default_factory=list)


class ImageEncoder(nn.Module):
    """Conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool) → flatten → linear feature."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = 3
        for c_out in config.channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.conv = nn.Sequential(*blocks)
        side = config.image_size // 2 ** len(config.channels)
        # Flattening (not global pooling) keeps where things are: captions say left, right, above.
        self.fc = nn.Linear(c_in * side * side, config.feature)

    def forward(self, images: Tensor) -> Tensor:
        """Images (B, 3, S, S) in [0, 1] → features (B, F)."""
        x = self.conv(images * 2.0 - 1.0)  # (B, C, S/2^n, S/2^n)
        return self.fc(x.flatten(1))  # (B, F)


class Captioner(nn.Module):
    """CNN encoder + LSTM decoder over words."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config)
        self.drop = nn.Dropout(config.dropout)
        self.init_state = nn.Linear(config.feature, 2 * config.layers * config.hidden)
        self.image_input = nn.Linear(config.feature, config.embedding)
        self.decoder = CharRNN(config.decoder_config())

    def encode(self, images: Tensor) -> tuple[State, Tensor]:
        """Images (B, 3, S, S) → the decoder's initial ``(h, c)`` (layers, B, H) and the image input (B, E)."""
        feats = self.drop(self.encoder(images))  # (B, F)
        c = self.config
        hc = torch.tanh(self.init_state(feats))  # (B, 2*L*H)
        hc = hc.view(-1, 2, c.layers, c.hidden).permute(1, 2, 0, 3)  # (2, L, B, H)
        return (hc[0].contiguous(), hc[1].contiguous()), self.image_input(feats)

    def forward(self, images: Tensor, ids: Tensor) -> Tensor:
        """Teacher forcing: images (B, 3, S, S), input ids (B, T) → logits (B, T, V)."""
        state, inject = self.encode(images)
        x = self.decoder.emb(ids) + inject.unsqueeze(1)  # (B, T, E): every step sees the image
        h, _ = self.decoder.rnn(x, state)  # (B, T, H)
        return self.decoder.head(self.decoder.drop(h))  # (B, T, V)

    def step(self, ids: Tensor, state: State, inject: Tensor) -> tuple[Tensor, State]:
        """One decoding step: ids (B,), state (L, B, H) each, image input (B, E) → logits (B, V), next state."""
        x = self.decoder.emb(ids) + inject  # (B, E)
        h, (hn, cn) = self.decoder.rnn(x.unsqueeze(1), (state[0].contiguous(), state[1].contiguous()))  # (B, 1, H)
        return self.decoder.head(h[:, 0]), (hn, cn)  # (B, V)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def beam_search(self, image: Tensor, width: int = 3, start: int = 1, end: int = 2) -> list[tuple[list[int], float]]:
        """Up to ``width`` captions (word ids, log-prob) for one image (3, S, S), best first."""
        state, inject = self.encode(image.unsqueeze(0))  # (L, 1, H) each, (1, E)
        beams = _Beams(width, start, state)
        for _ in range(self.config.max_words + 1):
            logits, new_state = self.step(beams.last(), beams.state, inject.expand(len(beams.seqs), -1))  # (K, V)
            if not beams.advance(torch.log_softmax(logits.float(), dim=-1), new_state, end):
                break
        return beams.best()

    @torch.no_grad()
    def sample(
        self, image: Tensor, temperature: float = 1.0, seed: int = 0, count: int = 1, start: int = 1, end: int = 2
    ) -> list[tuple[list[int], float]]:
        """``count`` sampled captions (word ids, log-prob at temperature 1), most likely first."""
        gen = torch.Generator().manual_seed(seed)
        state, inject = self.encode(image.unsqueeze(0).expand(count, -1, -1, -1))  # (L, N, H) each, (N, E)
        ids = torch.full((count,), start, dtype=torch.long)
        out: list[list[int]] = [[] for _ in range(count)]
        scores = [0.0] * count
        done = [False] * count
        for _ in range(self.config.max_words + 1):
            logits, state = self.step(ids, state, inject)  # (N, V)
            logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
            probs = torch.softmax(logits.float() / max(temperature, 1e-4), dim=-1)  # (N, V)
            ids = torch.multinomial(probs, 1, generator=gen).squeeze(1)  # (N,)
            for n in range(count):
                if not done[n]:
                    scores[n] += float(logp[n, ids[n]])
                    done[n] = int(ids[n]) == end
                    if not done[n]:
                        out[n].append(int(ids[n]))
            if all(done):
                break
        return sorted(zip(out, scores, strict=True), key=lambda r: -r[1])


class _Beams:
    """Beam-search bookkeeping: live hypotheses (ids, score, state) and finished ones."""

    def __init__(self, width: int, start: int, state: State) -> None:
        self.width = max(1, width)
        self.seqs: list[list[int]] = [[start]]
        self.scores = torch.zeros(1)  # (K,)
        self.state = state
        self.finished: list[tuple[list[int], float]] = []

    def last(self) -> Tensor:
        """Last id of every live hypothesis, (K,)."""
        return torch.tensor([s[-1] for s in self.seqs], dtype=torch.long)

    def advance(self, logp: Tensor, state: State, end: int) -> bool:
        """Extend every hypothesis by one word; False when the search is over."""
        total = (self.scores[:, None] + logp).flatten()  # (K*V,)
        vocab = logp.shape[1]
        keep_seqs: list[list[int]] = []
        keep_scores: list[float] = []
        keep_rows: list[int] = []
        for flat in torch.argsort(total, descending=True)[: 2 * self.width].tolist():
            row, word = divmod(flat, vocab)
            seq = self.seqs[row] + [word]
            if word == end:
                self.finished.append((seq[1:-1], float(total[flat])))
            elif len(keep_seqs) < self.width:
                keep_seqs.append(seq)
                keep_scores.append(float(total[flat]))
                keep_rows.append(row)
        self.finished.sort(key=lambda r: -r[1])
        if not keep_seqs or self._settled(max(keep_scores)):
            return False
        rows = torch.tensor(keep_rows, dtype=torch.long)
        self.seqs, self.scores = keep_seqs, torch.tensor(keep_scores)
        self.state = tuple(s[:, rows].contiguous() for s in state)  # (L, K, H) each
        return True

    def _settled(self, best_live: float) -> bool:
        """Whether ``width`` captions are finished and no live one can beat them (scores only fall)."""
        return len(self.finished) >= self.width and self.finished[self.width - 1][1] >= best_live

    def best(self) -> list[tuple[list[int], float]]:
        """The finished captions (live ones when none finished), best first."""
        found = self.finished or [(s[1:], float(v)) for s, v in zip(self.seqs, self.scores, strict=True)]
        return sorted(found, key=lambda r: -r[1])[: self.width]

"""Training and evaluating a Captioner: teacher forcing on (image, caption) pairs, BLEU on held-out.

``train_captioner(cfg, source, out)`` runs AdamW with cosine decay and gradient clipping for a
step or wall-clock budget, evaluates on the held-out split every ``eval_every`` steps (beam
search, BLEU-1..4 and, for synthetic scenes, the share of captions naming every object's
colour and shape) and keeps the best model (by BLEU-4) in ``out``. Progress goes to ``sink`` as
JSON-able events: ``start``, ``step``, ``eval``, ``done``.
"""

from __future__ import annotations

import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genbot.errors import InvalidRequest
from genbot.networks.captioner import Captioner, CaptionerConfig
from genbot.networks.captioner_checkpoint import LoadedCaptioner, caption_tensor, card_sections, save_captioner
from genbot.networks.card import ModelCard, Weights
from genbot.networks.vocab import Vocab
from genbot.networks.words import WordVocab, tokenize
from genbot.training.bleu import corpus_bleu
from genbot.training.caption_data import CaptionSource, HeldOut
from genbot.training.scenes import names_every_object

Sink = Callable[[dict[str, Any]], None]


@dataclass
class CaptionTrainConfig:
    """Hyperparameters and budget of one captioner training run."""

    image_size: int = 64  # images are resized to this square
    channels: tuple[int, ...] = (24, 48, 64, 96)  # conv block widths
    feature: int = 256  # image feature size
    layers: int = 1  # decoder LSTM layers
    hidden: int = 256  # decoder units per layer
    embedding: int = 64  # word embedding size
    dropout: float = 0.1  # feature and decoder dropout
    min_count: int = 1  # words seen fewer times in the training captions become <UNK>
    batch: int = 64  # images per step
    lr: float = 2e-3  # peak learning rate (cosine decay to 0.1x)
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 5.0  # max gradient norm
    steps: int | None = None  # budget: optimizer steps
    seconds: float | None = None  # budget: training seconds
    eval_every: int = 250  # steps between held-out evaluations
    eval_images: int = 300  # held-out images per evaluation
    beam: int = 3  # beam width used for evaluation
    seed: int = 1337  # random seed
    name: str = "captioner"  # model name in the card
    command: str = ""  # the command line, recorded in the card

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise InvalidRequest("give a budget: --steps or --seconds")
        if self.batch < 1 or self.lr <= 0 or self.eval_every < 1 or self.eval_images < 1:
            raise InvalidRequest("batch, lr, eval-every and eval-images must be positive")


@dataclass
class CaptionTrainResult:
    """What a finished run reports."""

    out: str
    steps: int
    seconds: float
    params: int
    vocab: int
    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


def build_model(cfg: CaptionTrainConfig, vocab_size: int) -> Captioner:
    """A fresh captioner of the configured size."""
    return Captioner(
        CaptionerConfig(
            vocab_size=vocab_size, image_size=cfg.image_size, channels=tuple(cfg.channels), feature=cfg.feature,
            layers=cfg.layers, hidden=cfg.hidden, embedding=cfg.embedding, dropout=cfg.dropout,
        )
    )  # fmt: skip


def caption_batch(words: WordVocab, captions: list[str]) -> Tensor:
    """``<START> … <END>`` ids of each caption, right-padded with ``<PAD>``: (B, T+1)."""
    rows = [words.encode(c) for c in captions]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [words.pad] * (width - len(r)) for r in rows], dtype=torch.long)


def train_step(model: Captioner, opt: torch.optim.Optimizer, images: Tensor, ids: Tensor, clip: float) -> float:
    """One teacher-forced step; returns the mean cross-entropy per word."""
    logits = model(images, ids[:, :-1])  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), ignore_index=0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return float(loss.detach())


def evaluate(loaded: LoadedCaptioner, held: HeldOut, beam: int = 3) -> tuple[dict[str, float], list[str]]:
    """BLEU-1..4 (and object accuracy for synthetic scenes) of beam-search captions; and the captions."""
    loaded.captioner.eval()
    texts = [caption_tensor(loaded, image, beam)[0].text for image in held.images]
    metrics = corpus_bleu([tokenize(t) for t in texts], [[tokenize(r) for r in refs] for refs in held.references])
    if held.objects is not None:
        hits = sum(names_every_object(t, objs) for t, objs in zip(texts, held.objects, strict=True))
        metrics["object_accuracy"] = hits / max(len(texts), 1)
    return metrics, texts


def _lr_at(cfg: CaptionTrainConfig, progress: float) -> float:
    """Cosine decay from ``lr`` to ``0.1 * lr`` over the budget's progress in [0, 1]."""
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _progress(cfg: CaptionTrainConfig, step: int, elapsed: float) -> float:
    """How far through the budget a run is, in [0, 1]."""
    parts = []
    if cfg.steps is not None:
        parts.append(step / max(cfg.steps, 1))
    if cfg.seconds is not None:
        parts.append(elapsed / max(cfg.seconds, 1e-9))
    return max(parts)


def _card(
    cfg: CaptionTrainConfig, source: CaptionSource, model: Captioner, metrics: dict[str, float], info: dict[str, Any]
) -> ModelCard:
    """The card saved with the weights (hash and sizes are filled in by ``save_captioner``)."""
    arch, encoder = card_sections(model.config)
    return ModelCard(
        name=cfg.name, description="Image captioner: small CNN encoder + LSTM word decoder", kind="captioner",
        corpus=source.name, architecture=arch, encoder=encoder, weights=Weights(sha256=""),
        metrics={k: round(v, 4) for k, v in metrics.items()}, training=info,
    )  # fmt: skip


def train_captioner(
    cfg: CaptionTrainConfig, source: CaptionSource, out: Path, sink: Sink = lambda e: None
) -> CaptionTrainResult:
    """Train a captioner on ``source`` and keep the best (by held-out BLEU-4) in ``out``."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    words = WordVocab.build(source.vocabulary_captions(), cfg.min_count)
    model = build_model(cfg, len(words))
    held = source.held_out(cfg.eval_images)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sink({"event": "start", "params": model.num_parameters(), "vocab": len(words), "config": asdict(cfg)})
    best: dict[str, float] = {}
    started, step, loss = time.perf_counter(), 0, float("nan")
    while _progress(cfg, step, time.perf_counter() - started) < 1.0:
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, _progress(cfg, step, time.perf_counter() - started))
        model.train()
        images, captions = source.batch(rng, cfg.batch)
        loss = train_step(model, opt, images, caption_batch(words, captions), cfg.grad_clip)
        step += 1
        if step % 50 == 0:
            sink(
                {
                    "event": "step",
                    "step": step,
                    "loss": round(loss, 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
        if step % cfg.eval_every == 0:
            best = _evaluate_and_keep(cfg, source, model, words, held, out, best, step, started, sink)
    if step % cfg.eval_every or not best:
        best = _evaluate_and_keep(cfg, source, model, words, held, out, best, step, started, sink)
    elapsed = time.perf_counter() - started
    result = CaptionTrainResult(str(out), step, round(elapsed, 1), model.num_parameters(), len(words), best)
    sink({"event": "done", **asdict(result)})
    return result


def _evaluate_and_keep(
    cfg: CaptionTrainConfig, source: CaptionSource, model: Captioner, words: WordVocab, held: HeldOut,
    out: Path, best: dict[str, float], step: int, started: float, sink: Sink,
) -> dict[str, float]:  # fmt: skip
    """Evaluate now; save the model if its BLEU-4 is the best so far; returns the best metrics."""
    loaded = LoadedCaptioner(model.decoder, Vocab([]), _card(cfg, source, model, {}, {}), out, model, words)
    metrics, texts = evaluate(loaded, held, cfg.beam)
    elapsed = time.perf_counter() - started
    sink({"event": "eval", "step": step, **{k: round(v, 4) for k, v in metrics.items()}, "sample": texts[0]})
    if best and metrics["bleu4"] <= best["bleu4"]:
        return best
    info = {"command": cfg.command, "steps": step, "seconds": round(elapsed, 1), "threads": torch.get_num_threads(),
            "hardware": _cpu_name(), "batch": cfg.batch,
            "held_out_images": len(held.references), "min_count": cfg.min_count, "seed": cfg.seed}  # fmt: skip
    save_captioner(out, model, words, _card(cfg, source, model, metrics, info))
    return metrics


def _cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and architecture."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name} ({platform.machine()})"

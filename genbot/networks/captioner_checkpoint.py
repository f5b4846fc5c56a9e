"""Captioner folders: ``model.safetensors`` + ``vocab.json`` (words) + ``plugin.toml`` (kind captioner).

The same rules as text models (:mod:`genbot.networks.checkpoint`): safetensors only, the sha256
in the card is checked, then every tensor's name and shape against ``[architecture]`` (the
decoder) and ``[encoder]``; files are written atomically, the card last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from genbot.errors import CheckpointError
from genbot.networks.captioner import Caption, Captioner, CaptionerConfig
from genbot.networks.card import Architecture, Encoder, ModelCard, Weights
from genbot.networks.checkpoint import (
    _DTYPES,
    CARD_FILE,
    VOCAB_FILE,
    LoadedGenerator,
    _read_weights,
    atomic_write,
    sha256_bytes,
)
from genbot.networks.images import image_tensor, open_image
from genbot.networks.vocab import Vocab
from genbot.networks.words import WordVocab


@dataclass
class LoadedCaptioner(LoadedGenerator):
    """A captioner ready to run; ``model`` is its decoder (a word-level CharRNN), ``vocab`` is empty."""

    captioner: Captioner
    words: WordVocab


def card_sections(config: CaptionerConfig) -> tuple[Architecture, Encoder]:
    """The ``[architecture]`` (decoder) and ``[encoder]`` sections describing ``config``."""
    arch = Architecture(
        cell="lstm",
        layers=config.layers,
        hidden=config.hidden,
        embedding=config.embedding,
        vocab_size=config.vocab_size,
        dropout=config.dropout,
    )
    encoder = Encoder(
        image_size=config.image_size, channels=list(config.channels), feature=config.feature, max_words=config.max_words
    )
    return arch, encoder


def config_of(card: ModelCard) -> CaptionerConfig:
    """The captioner config a card describes; CheckpointError if it is not a captioner card."""
    if card.kind != "captioner" or card.encoder is None:
        raise CheckpointError(f"model {card.name!r} is a {card.kind} model, not a captioner")
    a, e = card.architecture, card.encoder
    try:
        return CaptionerConfig(
            vocab_size=a.vocab_size, image_size=e.image_size, channels=tuple(e.channels), feature=e.feature,
            layers=a.layers, hidden=a.hidden, embedding=a.embedding, dropout=a.dropout, max_words=e.max_words,
        )  # fmt: skip
    except ValueError as err:
        raise CheckpointError(f"model {card.name!r}: {err}") from err


def save_captioner(
    folder: Path, model: Captioner, words: WordVocab, card: ModelCard, dtype: str = "float32"
) -> ModelCard:
    """Write a captioner folder atomically; returns the card as written (with hash and sizes)."""
    if len(words) != model.config.vocab_size:
        raise CheckpointError(f"vocab has {len(words)} words but the model expects {model.config.vocab_size}")
    tensors = {k: _stored(v, dtype) for k, v in model.state_dict().items()}
    blob = st_save(tensors, metadata={"format": "pt", "genbot": "captioner"})
    arch, encoder = card_sections(model.config)
    card = card.model_copy(
        update={
            "kind": "captioner",
            "architecture": arch,
            "encoder": encoder,
            "weights": Weights(file=card.weights.file, sha256=sha256_bytes(blob), dtype=dtype),
        }
    )
    atomic_write(folder / VOCAB_FILE, words.to_json().encode("utf-8"))
    atomic_write(folder / card.weights.file, blob)
    atomic_write(folder / CARD_FILE, card.to_toml().encode("utf-8"))
    return card


def _stored(t: torch.Tensor, dtype: str) -> torch.Tensor:
    """A tensor as saved: floats in ``dtype``, integer buffers (batch-norm counters) as they are."""
    t = t.detach().to("cpu")
    return (t.to(_DTYPES[dtype]) if t.is_floating_point() else t).contiguous()


def load_captioner(folder: Path) -> LoadedCaptioner:
    """Load and validate a captioner folder (the bundled plugin's loader); CheckpointError with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a model folder")
    card = ModelCard.read(folder / CARD_FILE)
    config = config_of(card)
    words = WordVocab.load(folder / VOCAB_FILE)
    if len(words) != config.vocab_size:
        raise CheckpointError(f"{folder}: vocab.json has {len(words)} words but plugin.toml says {config.vocab_size}")
    model = Captioner(config)
    tensors = _read_weights(folder, card)
    _check_shapes(folder, model, tensors)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    model.eval().requires_grad_(False)
    return LoadedCaptioner(model.decoder, Vocab([]), card, folder, model, words)


def _check_shapes(folder: Path, model: Captioner, tensors: dict[str, torch.Tensor]) -> None:
    """Every tensor the architecture needs, with its shape, and nothing else."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected.keys() != got.keys():
        missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        raise CheckpointError(
            f"{folder}: weights do not match the architecture (missing {missing}, unexpected {extra})"
        )
    for name, shape in expected.items():
        if got[name] != shape:
            raise CheckpointError(f"{folder}: tensor {name} has shape {got[name]}, architecture needs {shape}")


def caption_image(
    loaded: LoadedCaptioner, data: bytes, beam: int = 3, temperature: float | None = None, seed: int = 0, count: int = 3
) -> list[Caption]:
    """Captions of an encoded image (bytes), best first: beam search, or sampling when ``temperature`` is set."""
    image = image_tensor(open_image(data), loaded.captioner.config.image_size)  # (3, S, S)
    return caption_tensor(loaded, image, beam, temperature, seed, count)


def caption_tensor(
    loaded: LoadedCaptioner,
    image: torch.Tensor,
    beam: int = 3,
    temperature: float | None = None,
    seed: int = 0,
    count: int = 3,
) -> list[Caption]:
    """Captions of an image tensor (3, S, S) in [0, 1], best first."""
    model, words = loaded.captioner, loaded.words
    with torch.inference_mode():
        if temperature is None:
            found = model.beam_search(image, beam, words.start, words.end)
        else:
            found = model.sample(image, temperature, seed, count, words.start, words.end)
    return [Caption(words.decode(ids), ids, logp, [words.words[i] for i in ids]) for ids, logp in found]

"""Model folders: ``model.safetensors`` + ``vocab.json`` + ``plugin.toml``.

Weights are read with safetensors only (never pickle). Loading checks the sha256 recorded in
the card, then every tensor's name and shape against the architecture, so a corrupt, truncated
or mismatched folder fails with a message that says which. Each file is written to a temporary
name and renamed into place; the card goes last, so a crash mid-save leaves a folder whose
hash check fails loudly rather than one that loads the wrong weights.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from genbot.errors import CheckpointError
from genbot.networks.card import CARD_FILE, Architecture, ModelCard, Weights
from genbot.networks.charrnn import CharRNN, CharRNNConfig
from genbot.networks.vocab import Vocab

VOCAB_FILE = "vocab.json"
# mkstemp creates files readable by the owner only; published model files follow the umask.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedGenerator:
    """A generator as loaded from its folder: the network with its vocabulary and card."""

    network: CharRNN
    vocab: Vocab
    card: ModelCard
    path: Path


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def architecture_of(config: CharRNNConfig) -> Architecture:
    """The card section describing ``config``."""
    return Architecture.model_validate(config.to_dict())


def config_of(arch: Architecture) -> CharRNNConfig:
    """The model config a card's architecture describes."""
    return CharRNNConfig(**arch.model_dump())


def save_model(folder: Path, model: CharRNN, vocab: Vocab, card: ModelCard, dtype: str = "float32") -> ModelCard:
    """Write a model folder atomically; returns the card as written (with hash and sizes)."""
    if len(vocab) != model.config.vocab_size:
        raise CheckpointError(f"vocab has {len(vocab)} chars but the model expects {model.config.vocab_size}")
    tensors = {k: v.detach().to("cpu", _DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()}
    blob = st_save(tensors, metadata={"format": "pt", "genbot": "charrnn"})
    card = card.model_copy(
        update={
            "architecture": architecture_of(model.config),
            "weights": Weights(file=card.weights.file, sha256=sha256_bytes(blob), dtype=dtype),
        }
    )
    atomic_write(folder / VOCAB_FILE, vocab.to_json().encode("utf-8"))
    atomic_write(folder / card.weights.file, blob)
    atomic_write(folder / CARD_FILE, card.to_toml().encode("utf-8"))
    return card


def load_model(folder: Path, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load and validate a model folder; raises ``CheckpointError`` with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a model folder")
    card = ModelCard.read(folder / CARD_FILE)
    if card.kind != "charrnn":
        raise CheckpointError(f"{folder}: holds a {card.kind} model, not a text model (its plugin loads it)")
    vocab = Vocab.load(folder / VOCAB_FILE)
    if len(vocab) != card.architecture.vocab_size:
        raise CheckpointError(
            f"{folder}: vocab.json has {len(vocab)} characters but plugin.toml says {card.architecture.vocab_size}"
        )
    tensors = _read_weights(folder, card)
    model = build_from_tensors(config_of(card.architecture), tensors, folder)
    return LoadedGenerator(model.to(device).eval(), vocab, card, folder)


def build_from_tensors(config: CharRNNConfig, tensors: dict[str, torch.Tensor], where: Path | str) -> CharRNN:
    """A CharRNN whose parameters are ``tensors`` themselves (assigned, not copied)."""
    # torch.device("meta") would skip the throwaway random init, but entering it imports ~800
    # modules (+75 MB resident); a short-lived random init costs less.
    model = CharRNN(config)
    _check_shapes(Path(where), model, tensors)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, assign=True)
    return model


def _read_weights(folder: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    path = folder / card.weights.file
    try:
        blob = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing weights file") from e
    if sha256_bytes(blob) != card.weights.sha256:
        raise CheckpointError(f"{path}: sha256 does not match plugin.toml (corrupt or replaced weights)")
    try:
        return st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from e


def _check_shapes(folder: Path, model: CharRNN, tensors: dict[str, torch.Tensor]) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    if missing or extra:
        raise CheckpointError(
            f"{folder}: weights do not match the architecture (missing {missing}, unexpected {extra})"
        )
    for name, shape in expected.items():
        if got[name] != shape:
            raise CheckpointError(f"{folder}: tensor {name} has shape {got[name]}, architecture needs {shape}")

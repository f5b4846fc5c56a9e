"""``plugin.toml``: the card that describes a model folder (architecture, provenance, metrics).

Unknown keys are an error, so a typo in a hand-edited card is caught at load time.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genbot.errors import CheckpointError

CARD_FILE = "plugin.toml"  # a model folder's card (read without torch: plugin discovery needs no weights)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Architecture(_Strict):
    """Sizes that must match the weights exactly."""

    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    layers: int = Field(2, ge=1)
    hidden: int = Field(256, ge=1)
    embedding: int = Field(64, ge=1)
    vocab_size: int = Field(ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class Encoder(_Strict):
    """A captioner's image encoder (``kind = "captioner"`` cards only); sizes must match the weights."""

    kind: Literal["small-cnn"] = "small-cnn"
    image_size: int = Field(64, ge=1)
    channels: list[int] = Field(min_length=1)
    feature: int = Field(ge=1)
    max_words: int = Field(20, ge=1)


class Weights(_Strict):
    """The weights file and its integrity hash."""

    file: str = "model.safetensors"
    sha256: str
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


class SamplingDefaults(_Strict):
    """What a request gets when it leaves a parameter out."""

    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    length: int = Field(400, ge=1)
    prompt: str = "\n"  # primes the model when a request has an empty prompt
    code_fence: str = ""  # language tag front ends use to fence output ("c", "latex"), "" for none


class ModelCard(_Strict):
    """Everything ``plugin.toml`` records about one model folder."""

    name: str
    description: str = ""
    kind: Literal["charrnn", "captioner"] = "charrnn"
    version: int = Field(1, ge=1)
    corpus: str = ""
    licence: str = ""
    architecture: Architecture  # a captioner's decoder
    encoder: Encoder | None = None  # a captioner's image encoder
    weights: Weights
    sampling: SamplingDefaults = SamplingDefaults()
    metrics: dict[str, float] = {}
    training: dict[str, Any] = {}

    @model_validator(mode="after")
    def _captioner_has_encoder(self) -> ModelCard:
        if (self.kind == "captioner") != (self.encoder is not None):
            raise ValueError("a captioner card needs an [encoder] section, and only a captioner has one")
        return self

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """Parse and validate a card, naming the file and the problem on failure."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing plugin.toml") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: not valid TOML ({e})") from e
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise CheckpointError(f"{path}: invalid card: {_first_error(e)}") from e

    def to_toml(self) -> str:
        """TOML text of the card."""
        return tomli_w.dumps(_drop_none(self.model_dump(mode="json")))


def _drop_none(value: Any) -> Any:
    """TOML has no null: leave unset values out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"

"""Captioning one image with a loaded captioner: parameter checks, the blocking run, the result.

The service calls :func:`run_caption` in a worker thread (decoding an image and running the CNN
and the beam search is blocking torch work) and stores the result as a generations row whose
prompt is :func:`genbot.models.images.describe` of the image.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from genbot.engine.registry import GeneratorEntry
from genbot.engine.sampling import SEED_BITS
from genbot.errors import InvalidRequest
from genbot.models.captioner import Caption
from genbot.models.captioner_checkpoint import LoadedCaptioner, caption_tensor
from genbot.models.images import describe, image_tensor, open_image

MAX_BEAM = 10  # widest beam a request may ask for
MAX_COUNT = 10  # most sampled captions a request may ask for


@dataclass
class CaptionResult:
    """A finished caption request, after its generations row is written."""

    id: int  # the generations row
    model: str
    version: int
    image: str  # "<image sha256:… WxH>", the row's prompt
    method: str  # "beam" or "sample"
    beam: int
    temperature: float | None
    seed: int | None
    captions: list[Caption] = field(default_factory=list)  # best first
    duration_ms: float = 0.0

    @property
    def text(self) -> str:
        """The best caption."""
        return self.captions[0].text if self.captions else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``genbot caption --json`` prints)."""
        return asdict(self)


def captioner_of(entry: GeneratorEntry) -> LoadedCaptioner:
    """The loaded captioner behind ``entry``; InvalidRequest if it is a text generator."""
    if not isinstance(entry.loaded, LoadedCaptioner):
        raise InvalidRequest(f"model {entry.name!r} generates text, not captions; pick a captioner")
    return entry.loaded


def check_params(beam: int, temperature: float | None, count: int, max_temperature: float) -> None:
    """InvalidRequest for a beam, temperature or count out of range."""
    if not 1 <= beam <= MAX_BEAM:
        raise InvalidRequest(f"beam must be between 1 and {MAX_BEAM}, got {beam}")
    if temperature is not None and not 0 < temperature <= max_temperature:
        raise InvalidRequest(f"temperature must be above 0 and at most {max_temperature}, got {temperature}")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidRequest(f"count must be between 1 and {MAX_COUNT}, got {count}")


def pick_seed(temperature: float | None, seed: int | None) -> int | None:
    """The seed a sampled request uses (a fresh one when unset); None for beam search."""
    if temperature is None:
        return None
    return seed if seed is not None else secrets.randbits(SEED_BITS)


def run_caption(
    loaded: LoadedCaptioner, data: bytes, beam: int, temperature: float | None, seed: int | None, count: int
) -> tuple[str, list[Caption]]:
    """Decode ``data`` (ImageError if it is not a sane image) and caption it: (image description, captions)."""
    image = open_image(data)
    tensor = image_tensor(image, loaded.captioner.config.image_size)  # (3, S, S)
    return describe(data, image), caption_tensor(loaded, tensor, beam, temperature, seed or 0, count)

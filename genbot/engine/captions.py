"""Captioning one image with a loaded captioner: parameter checks, the blocking run, the result.

The service calls :func:`run_caption` in a worker thread (decoding an image and running the CNN
and the beam search is blocking torch work) and stores the result as a generations row whose
prompt is :func:`genbot.networks.images.describe` of the image. A decoded upload can hold a few
hundred MB while it is shrunk, so :class:`CaptionSlots` lets only a few run at once per process
and refuses the rest as ``Busy`` rather than queueing them (the API answers 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from genbot.engine.registry import GeneratorEntry
from genbot.engine.sampling import SEED_BITS
from genbot.errors import Busy, InvalidRequest
from genbot.networks.captioner import Caption
from genbot.networks.captioner_checkpoint import LoadedCaptioner, caption_tensor
from genbot.networks.images import decode_image, describe, image_tensor

MAX_BEAM = 10  # widest beam a request may ask for
MAX_COUNT = 10  # most sampled captions a request may ask for
BUSY_RETRY_S = 2.0  # Retry-After for a caption refused at capacity
T = TypeVar("T")


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


class CaptionSlots:
    """At most ``limit`` captions run at once; one more is refused with ``Busy`` instead of waiting."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._lock = threading.Lock()  # claimed on the event loop, released in a worker thread

    @property
    def running(self) -> int:
        """Captions holding a slot now."""
        return self._running

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a worker thread, holding a slot until it returns; ``Busy`` if all are taken."""
        with self._lock:
            if self._running >= self.limit:
                raise Busy(f"{self.limit} images are being captioned; retry shortly", BUSY_RETRY_S)
            self._running += 1

        def held() -> T:
            try:
                return work(*args)
            finally:
                with self._lock:
                    self._running -= 1

        # Shielded: a caller that goes away does not free the slot while the thread still holds the image.
        return await asyncio.shield(asyncio.to_thread(held))


def run_caption(
    loaded: LoadedCaptioner, data: bytes, beam: int, temperature: float | None, seed: int | None, count: int
) -> tuple[str, list[Caption]]:
    """Decode ``data`` (ImageError if it is not a sane image) and caption it: (image description, captions)."""
    size = loaded.captioner.config.image_size
    decoded = decode_image(data, fit=size)  # shrunk while decoding: memory stays near the encoded pixels
    tensor = image_tensor(decoded.image, size)  # (3, S, S)
    return describe(data, decoded.size), caption_tensor(loaded, tensor, beam, temperature, seed or 0, count)

"""Reading untrusted images: bytes → an RGB tensor, or ``ImageError`` saying what is wrong.

Only the formats in ``FORMATS`` are decoded (PNG, JPEG, GIF, WebP, BMP: what the API and the
Discord bot document); anything else, or data Pillow cannot read, is an ``ImageError``.
Decompression bombs are refused from the header alone: more than ``MAX_PIXELS`` pixels or a
side longer than ``MAX_SIDE`` is an error before any pixel is decoded.

Memory is bounded by the decoded image itself: a caller that wants a small picture (``fit``)
gets the image shrunk *before* any mode conversion — JPEGs are decoded at a reduced scale
(``Image.draft``), everything else is resized in its own mode (16-bit greyscale included) —
so a blank 6300x6300 16-bit PNG costs its 79 MB of pixels, not gigabytes of float copies.
Every mode (CMYK, RGBA, P, LA, L, I;16, I, F, …) is converted to RGB; transparency is
composited on white.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from genbot.errors import ImageError

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")  # Pillow's names of the accepted formats
MAX_BYTES = 20 * 1024 * 1024  # largest encoded image accepted
MAX_PIXELS = 40_000_000  # width x height above this is refused (a decompression bomb)
MAX_SIDE = 16_384  # either side longer than this is refused
# A picture wanted at S x S is first shrunk to at most SHRINK_MARGIN * S a side, so the final
# antialiased resize still sees several source pixels per output pixel.
SHRINK_MARGIN = 4
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits a channel

Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check, for every caller in this process


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture in RGB, and the size the encoded image itself has."""

    image: Image.Image
    size: tuple[int, int]  # (width, height) before any shrinking


def decode_image(data: bytes, fit: int | None = None) -> DecodedImage:
    """Decode ``data`` to RGB (no side above ``SHRINK_MARGIN * fit`` when ``fit`` is set); ``ImageError`` if unsafe."""
    if not data:
        raise ImageError("the image is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"the image is {len(data):,} bytes; the limit is {MAX_BYTES:,}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            size = image.size
            _check_size(size)
            if fit is not None:
                _draft(image, SHRINK_MARGIN * fit)
            image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"the image is too large to decode safely ({e})") from e
        except UnidentifiedImageError as e:
            raise ImageError("not an image in a supported format (PNG, JPEG, GIF, WebP or BMP)") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"the image is truncated or corrupt ({e})") from e
    small = shrink(image, SHRINK_MARGIN * fit) if fit is not None else image
    return DecodedImage(to_rgb(small), size)


def open_image(data: bytes, fit: int | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image; ``ImageError`` for anything that is not a sane image."""
    return decode_image(data, fit).image


def _check_size(size: tuple[int, int]) -> None:
    """Refuse huge dimensions before any pixel is decoded."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(f"the image is {width}x{height}; the limit is {MAX_PIXELS:,} pixels and {MAX_SIDE} a side")


def _draft(image: Image.Image, side: int) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale that still leaves both sides >= ``side``."""
    if image.format == "JPEG" and min(image.size) > side:
        image.draft(image.mode, (side, side))


def shrink(image: Image.Image, side: int) -> Image.Image:
    """``image`` resized in its own mode so neither side is above ``side`` (unchanged if already so)."""
    width, height = image.size
    target = (min(width, side), min(height, side))
    if target == image.size:
        return image
    # Pillow resizes "1" and "P" by nearest neighbour only; expand them to a mode it filters.
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif image.mode == "P":
        image = image.convert("RGB")
    return image.resize(target, Image.Resampling.BILINEAR)  # RGBA/LA: Pillow premultiplies alpha


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: transparency on white, 16-bit and float modes stretched to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        pixels = np.asarray(image).astype(np.float32)  # float32: a quarter of float64's memory
        low = float(pixels.min())
        span = max(float(pixels.max()) - low, 1e-9)
        pixels -= low
        pixels *= 255.0 / span
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_tensor(image: Image.Image, size: int) -> Tensor:
    """An image resized to ``size`` x ``size`` RGB → float32 tensor (3, size, size) in [0, 1]."""
    small = to_rgb(shrink(image, SHRINK_MARGIN * size))
    resized = small.resize((size, size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy())  # (S, S, 3)
    return pixels.permute(2, 0, 1).float() / 255.0  # (3, S, S)


def describe(data: bytes, size: tuple[int, int]) -> str:
    """Short text standing for an image in the generations table: ``<image sha256:… WxH>``."""
    width, height = size
    return f"<image sha256:{hashlib.sha256(data).hexdigest()[:16]} {width}x{height}>"

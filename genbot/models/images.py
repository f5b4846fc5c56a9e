"""Reading untrusted images: bytes → an RGB tensor, or ``ImageError`` saying what is wrong.

Pillow decodes; anything it cannot read (not an image, truncated data) is an ``ImageError``.
Decompression bombs are refused from the header alone: more than ``MAX_PIXELS`` pixels or a
side longer than ``MAX_SIDE`` is an error before any pixel is decoded. Every mode (CMYK, RGBA,
P, LA, L, I;16, …) is converted to RGB; transparency is composited on white.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from genbot.errors import ImageError

MAX_BYTES = 20 * 1024 * 1024  # largest encoded image accepted
MAX_PIXELS = 40_000_000  # width x height above this is refused (a decompression bomb)
MAX_SIDE = 16_384  # either side longer than this is refused

Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check, for every caller in this process


def open_image(data: bytes) -> Image.Image:
    """Decode ``data`` into an RGB image; ``ImageError`` for anything that is not a sane image."""
    if not data:
        raise ImageError("the image is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"the image is {len(data):,} bytes; the limit is {MAX_BYTES:,}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            _check_size(image.size)
            image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"the image is too large to decode safely ({e})") from e
        except UnidentifiedImageError as e:
            raise ImageError("not an image Pillow can read (JPEG, PNG, GIF, WebP, BMP, …)") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"the image is truncated or corrupt ({e})") from e
    return to_rgb(image)


def _check_size(size: tuple[int, int]) -> None:
    """Refuse huge dimensions before any pixel is decoded."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(f"the image is {width}x{height}; the limit is {MAX_PIXELS:,} pixels and {MAX_SIDE} a side")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: transparency on white, 16-bit and float modes scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        span = max(float(pixels.max() - pixels.min()), 1e-9)
        scaled = ((pixels - pixels.min()) / span * 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_tensor(image: Image.Image, size: int) -> Tensor:
    """An RGB image resized to ``size`` x ``size`` → float tensor (3, size, size) in [0, 1]."""
    resized = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy())  # (S, S, 3)
    return pixels.permute(2, 0, 1).float() / 255.0  # (3, S, S)


def describe(data: bytes, image: Image.Image) -> str:
    """Short text standing for an image in the generations table: ``<image sha256:… WxH>``."""
    return f"<image sha256:{hashlib.sha256(data).hexdigest()[:16]} {image.width}x{image.height}>"

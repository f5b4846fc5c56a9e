"""Where a captioner's training pairs come from: synthetic scenes or a COCO-format folder.

Both give training batches (images as float tensors (B, 3, S, S) in [0, 1], one caption each)
and a held-out split with every reference caption. A COCO folder is ``captions.json``
(``images: [{id, file_name}]``, ``annotations: [{image_id, caption}]``) plus the images (beside
it or in its ``images/`` folder); its last 10% of images (in file order) are held out. Synthetic
scenes are rendered on the fly from seeds below ``HELD_OUT_SEED``; the held-out scenes use seeds
from it upwards.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from genbot.errors import CorpusError, GenbotError
from genbot.networks.images import image_tensor, open_image
from genbot.training.scenes import SceneObject, render_scene

CAPTIONS_FILE = "captions.json"
HELD_OUT_SEED = 1_000_000_000  # synthetic training scenes use seeds below this, held-out ones from it up
SYNTHETIC_TRAIN_SEEDS = 100_000_000  # how many distinct training scenes there are (seeds 0..n-1)


@dataclass
class HeldOut:
    """Held-out images (N, 3, S, S), their reference captions and, for synthetic scenes, their objects."""

    images: Tensor
    references: list[list[str]]
    objects: list[tuple[SceneObject, ...]] | None = None


class CaptionSource(Protocol):
    """Training batches and a held-out split."""

    name: str

    def vocabulary_captions(self) -> list[str]:
        """Captions the word vocabulary is built from."""
        ...

    def batch(self, rng: random.Random, size: int) -> tuple[Tensor, list[str]]:
        """``size`` training images (B, 3, S, S) and one caption each."""
        ...

    def held_out(self, limit: int) -> HeldOut:
        """At most ``limit`` held-out images with all their references."""
        ...


class SyntheticScenes:
    """Endless rendered scenes (see :mod:`genbot.training.scenes`).

    Training scenes are drawn at a random size from ``render_sizes`` (default: the model's size
    twice as often as 40, 48, 96, 128 and 160 pixels) and resized, so the model also reads the
    soft edges resizing leaves; held-out scenes are drawn at the model's size.
    """

    def __init__(
        self, image_size: int, train_scenes: int = SYNTHETIC_TRAIN_SEEDS, render_sizes: tuple[int, ...] | None = None
    ) -> None:
        self.image_size = image_size
        self.train_scenes = train_scenes
        self.render_sizes = render_sizes or (image_size, image_size, 40, 48, 96, 128, 160)
        self.name = "synthetic-scenes"

    def vocabulary_captions(self) -> list[str]:
        """Every reference caption of 3,000 training scenes (covers all words)."""
        return [c for seed in range(3000) for c in render_scene(seed, 8).captions]

    def batch(self, rng: random.Random, size: int) -> tuple[Tensor, list[str]]:
        """Fresh scenes, one random reference caption each."""
        scenes = [render_scene(rng.randrange(self.train_scenes), rng.choice(self.render_sizes)) for _ in range(size)]
        images = torch.stack([image_tensor(s.image, self.image_size) for s in scenes])  # (B, 3, S, S)
        return images, [rng.choice(s.captions) for s in scenes]

    def held_out(self, limit: int) -> HeldOut:
        """Scenes ``HELD_OUT_SEED`` .. ``HELD_OUT_SEED + limit - 1``."""
        scenes = [render_scene(HELD_OUT_SEED + i, self.image_size) for i in range(limit)]
        images = torch.stack([image_tensor(s.image, self.image_size) for s in scenes])  # (N, 3, S, S)
        return HeldOut(images, [list(s.captions) for s in scenes], [s.objects for s in scenes])


class CocoCaptions:
    """A COCO-format captions folder read into memory (images resized to ``image_size``)."""

    def __init__(self, folder: Path, image_size: int, held_out_fraction: float = 0.1) -> None:
        self.name = folder.name
        pairs = read_coco(folder)
        images = torch.stack([_load_image(folder, file, image_size) for file, _ in pairs])  # (N, 3, S, S)
        held = max(1, round(len(pairs) * held_out_fraction)) if len(pairs) > 1 else 0
        cut = len(pairs) - held
        self.train_images, self.train_captions = images[:cut], [caps for _, caps in pairs[:cut]]
        self.test = HeldOut(images[cut:], [caps for _, caps in pairs[cut:]])
        if cut == 0:
            raise CorpusError(f"{folder}: needs at least two images (one to train on, one held out)")

    def vocabulary_captions(self) -> list[str]:
        """The training split's captions."""
        return [c for caps in self.train_captions for c in caps]

    def batch(self, rng: random.Random, size: int) -> tuple[Tensor, list[str]]:
        """Random training images, one random caption each."""
        rows = [rng.randrange(len(self.train_captions)) for _ in range(size)]
        return self.train_images[rows], [rng.choice(self.train_captions[r]) for r in rows]

    def held_out(self, limit: int) -> HeldOut:
        """The last 10% of images."""
        return HeldOut(self.test.images[:limit], self.test.references[:limit])


def read_coco(folder: Path) -> list[tuple[str, list[str]]]:
    """(image file name, its captions) for every image of a COCO ``captions.json`` that has a caption."""
    path = folder / CAPTIONS_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        files = {int(img["id"]): str(img["file_name"]) for img in data["images"]}
        captions: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
    except FileNotFoundError as e:
        raise CorpusError(f"{folder}: no {CAPTIONS_FILE} (COCO captions format)") from e
    except (ValueError, KeyError, TypeError) as e:
        raise CorpusError(f"{path}: not a COCO captions file ({type(e).__name__}: {e})") from e
    pairs = [(files[i], captions[i]) for i in sorted(files) if i in captions]
    if not pairs:
        raise CorpusError(f"{path}: no image has a caption")
    return pairs


def _load_image(folder: Path, file: str, size: int) -> Tensor:
    """One corpus image as (3, S, S); CorpusError naming the file if it cannot be read."""
    path = folder / file
    if not path.is_file():
        path = folder / "images" / file  # COCO's own layout: captions.json beside an images/ folder
    if folder.resolve() not in path.resolve().parents or not path.is_file():
        raise CorpusError(f"{path}: listed in {CAPTIONS_FILE} but not a file in the folder")
    try:
        return image_tensor(open_image(path.read_bytes()), size)
    except GenbotError as e:
        raise CorpusError(f"{path}: {e}") from e

"""Synthetic scenes: 1–3 coloured shapes on a plain background, with grammatical captions.

``render_scene(seed)`` is deterministic per seed and size. Every scene has several reference
captions (different templates, the same facts) so BLEU is measured as on COCO; objects are
mentioned left to right. The facts (colour, shape, size, position) come back too, so
``names_every_object`` can check a caption against them.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from genbot.networks.words import tokenize

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 50, 170),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "big")
NUMBERS = {2: "two", 3: "three"}
_COLS = ("left", "middle", "right")
_ROWS = ("top", "middle", "bottom")


@dataclass(frozen=True)
class SceneObject:
    """One shape: colour, kind, size and grid cell (column, row in 0..2)."""

    colour: str
    shape: str
    size: str
    col: int
    row: int


@dataclass(frozen=True)
class Scene:
    """A rendered scene, its objects (left to right) and reference captions (first is canonical)."""

    image: Image.Image
    objects: tuple[SceneObject, ...]
    captions: tuple[str, ...]


def render_scene(seed: int, size: int = 64) -> Scene:
    """The scene of ``seed``: same seed and size, same pixels and captions."""
    rng = random.Random(seed)
    objects = _place_objects(rng)
    return Scene(_draw(objects, size, rng), objects, tuple(captions_for(objects)))


def _place_objects(rng: random.Random) -> tuple[SceneObject, ...]:
    """1–3 objects in distinct grid cells, in distinct columns, sorted left to right."""
    count = rng.choice((1, 1, 2, 2, 3))
    cols = sorted(rng.sample(range(3), count))
    same = count > 1 and rng.random() < 0.3  # "two green triangles"
    first = (rng.choice(list(COLOURS)), rng.choice(SHAPES))
    objects = []
    for col in cols:
        colour, shape = first if same else (rng.choice(list(COLOURS)), rng.choice(SHAPES))
        objects.append(SceneObject(colour, shape, rng.choice(SIZES), col, rng.randrange(3)))
    return tuple(objects)


def _draw(objects: tuple[SceneObject, ...], size: int, rng: random.Random) -> Image.Image:
    """Paint the objects on a light, slightly tinted background."""
    tint = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), tint)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for obj in objects:
        radius = cell * (0.22 if obj.size == "small" else 0.45) * rng.uniform(0.9, 1.05)
        cx = cell * (obj.col + 0.5) + rng.uniform(-0.05, 0.05) * cell
        cy = cell * (obj.row + 0.5) + rng.uniform(-0.05, 0.05) * cell
        colour = tuple(min(255, max(0, v + rng.randint(-20, 20))) for v in COLOURS[obj.colour])
        _draw_shape(draw, obj.shape, cx, cy, radius, colour)
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour: tuple) -> None:
    """One filled shape centred on (cx, cy) with half-size ``r``."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)


# ----- captions -------------------------------------------------------------------------------


def captions_for(objects: tuple[SceneObject, ...]) -> list[str]:
    """Reference captions of a scene: several templates stating the same facts."""
    if len(objects) == 1:
        return _single(objects[0])
    if len({(o.colour, o.shape) for o in objects}) == 1:
        return _group(objects)
    if len(objects) == 2:
        return _pair(objects[0], objects[1])
    return _row_of_three(objects)


def _noun(obj: SceneObject, size: bool = True) -> str:
    return f"a {obj.size} {obj.colour} {obj.shape}" if size else f"a {obj.colour} {obj.shape}"


def _where(obj: SceneObject) -> str:
    col, row = _COLS[obj.col], _ROWS[obj.row]
    if col == "middle" and row == "middle":
        return "in the middle"
    if row == "middle":
        return f"on the {col}"
    if col == "middle":
        return f"at the {row}"
    return f"in the {row} {col} corner"


def _single(obj: SceneObject) -> list[str]:
    return [f"{_noun(obj)} {_where(obj)}", f"{_noun(obj)}", f"there is {_noun(obj)} {_where(obj)}"]


def _group(objects: tuple[SceneObject, ...]) -> list[str]:
    count, o = NUMBERS[len(objects)], objects[0]
    return [
        f"{count} {o.colour} {o.shape}s",
        f"{count} {o.colour} {o.shape}s side by side",
        f"{count} {o.colour} {o.shape}s in a row",
    ]


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` is with respect to ``b`` (``a`` is the left one)."""
    if a.row < b.row:
        return "above"
    if a.row > b.row:
        return "below"
    return "to the left of"


def _pair(a: SceneObject, b: SceneObject) -> list[str]:
    rel = _relation(a, b)
    return [f"{_noun(a)} {rel} {_noun(b)}", f"{_noun(a, False)} {rel} {_noun(b, False)}", f"{_noun(a)} and {_noun(b)}"]


def _row_of_three(objects: tuple[SceneObject, ...]) -> list[str]:
    a, b, c = objects
    plain = f"{_noun(a)}, {_noun(b)} and {_noun(c)}"
    short = f"{_noun(a, False)}, {_noun(b, False)} and {_noun(c, False)}"
    return [plain, f"from left to right {short}", short]


# ----- checks ---------------------------------------------------------------------------------


def named_objects(caption: str) -> Counter[tuple[str, str]]:
    """(colour, shape) pairs a caption names, counting "two red circles" as two."""
    words = tokenize(caption)
    found: Counter[tuple[str, str]] = Counter()
    for i, word in enumerate(words):
        if word not in COLOURS or i + 1 >= len(words):
            continue
        shape = words[i + 1].removesuffix("s")
        if shape in SHAPES:
            count = {"two": 2, "three": 3}.get(words[i - 1], 1) if i else 1
            found[(word, shape)] += count
    return found


def names_every_object(caption: str, objects: tuple[SceneObject, ...]) -> bool:
    """Whether ``caption`` names exactly the scene's objects by colour and shape."""
    return named_objects(caption) == Counter((o.colour, o.shape) for o in objects)


def write_coco_folder(folder: Path, count: int, size: int = 64, first_seed: int = 0) -> Path:
    """Render scenes ``first_seed`` .. ``first_seed + count - 1`` as PNGs + a COCO ``captions.json`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for i in range(count):
        scene = render_scene(first_seed + i, size)
        name = f"scene{first_seed + i:09d}.png"
        scene.image.save(folder / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        annotations += [{"id": len(annotations) + 1, "image_id": i + 1, "caption": c} for c in scene.captions]
    data = {"info": {"description": f"genbot synthetic scenes, seeds {first_seed}..{first_seed + count - 1}"}}
    (folder / "captions.json").write_text(json.dumps({**data, "images": images, "annotations": annotations}))
    return folder

"""The image captioner: model, decoding, checkpoints, scenes, unsafe images, training, COCO, CLI and REPL."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import struct
import tomllib
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from genbot.config import bundled_plugins_dir, load_settings
from genbot.errors import CheckpointError, ImageError, InvalidRequest
from genbot.frontends.cli import app
from genbot.frontends.repl import Repl
from genbot.networks.captioner import Captioner, CaptionerConfig
from genbot.networks.captioner_checkpoint import caption_image, caption_tensor, load_captioner, save_captioner
from genbot.networks.card import ModelCard
from genbot.networks.checkpoint import load_model
from genbot.networks.images import MAX_SIDE, SHRINK_MARGIN, decode_image, image_tensor, open_image
from genbot.networks.words import END, START, WordVocab, tokenize
from genbot.service import GenbotService, GenerationRequest
from genbot.training.bleu import corpus_bleu
from genbot.training.caption_data import HELD_OUT_SEED, CocoCaptions, SyntheticScenes
from genbot.training.captioner_trainer import CaptionTrainConfig, train_captioner
from genbot.training.scenes import COLOURS, Scene, names_every_object, render_scene

TINY = {"image_size": 32, "channels": (16, 16), "feature": 32, "hidden": 48, "embedding": 16}
SIZE = 32
BUNDLED = bundled_plugins_dir() / "captioner"
runner = CliRunner()


class SingleObjectScenes(SyntheticScenes):
    """Synthetic scenes with one object each, captioned "a big red circle": learnable in seconds."""

    def batch(self, rng: random.Random, size: int) -> tuple[torch.Tensor, list[str]]:
        scenes: list[Scene] = []
        while len(scenes) < size:
            scene = render_scene(rng.randrange(HELD_OUT_SEED), self.image_size)
            if len(scene.objects) == 1:
                scenes.append(scene)
        return torch.stack([image_tensor(s.image, self.image_size) for s in scenes]), [s.captions[1] for s in scenes]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugins folder with a captioner trained for ~6 s on single-object scenes (named ``captioner``)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("plugins") / "captioner"
    cfg = CaptionTrainConfig(**TINY, batch=32, steps=400, lr=1e-2, eval_every=1000, eval_images=10)  # type: ignore[arg-type]
    train_captioner(cfg, SingleObjectScenes(SIZE), folder)
    shutil.copy(BUNDLED / "plugin.py", folder / "plugin.py")
    return folder


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def small_model(vocab: int = 11, seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    cfg = CaptionerConfig(
        vocab_size=vocab, image_size=32, channels=(8, 16), feature=16, layers=2, hidden=24, embedding=8
    )
    return Captioner(cfg).eval()


# ----- model, vocabulary, decoding ------------------------------------------------------------


def test_model_shapes() -> None:
    model = small_model()
    images, ids = torch.rand(2, 3, 32, 32), torch.randint(0, 11, (2, 5))
    assert model(images, ids).shape == (2, 5, 11)
    (h, c), inject = model.encode(images)
    assert h.shape == c.shape == (2, 2, 24) and inject.shape == (2, 8)
    logits, (h2, _) = model.step(ids[:, 0], (h, c), inject)
    assert logits.shape == (2, 11) and h2.shape == (2, 2, 24)
    with pytest.raises(ValueError, match="multiple"):
        CaptionerConfig(vocab_size=5, image_size=30, channels=(8, 8))


def test_word_vocabulary_specials_and_rare_words() -> None:
    words = WordVocab.build(["A red circle.", "a red square", "a zebra"], min_count=2)
    assert words.words[:4] == ["<PAD>", START, END, "<UNK>"] and "zebra" not in words.words
    ids = words.encode("a zebra")
    assert ids[0] == words.start and ids[-1] == words.end and ids[2] == words.unk
    assert words.decode([words.start, words.index["red"], words.end, words.index["red"]]) == "red"
    full = WordVocab.build(["a red circle, a dog."])
    assert full.decode(full.encode("a red circle, a dog.")) == "a red circle, a dog."
    assert tokenize("Two dogs, one cat.") == ["two", "dogs", ",", "one", "cat", "."]


def test_beam_search_sorted_log_probs_match_the_model(tiny: Path) -> None:
    loaded = load_captioner(tiny)
    image = image_tensor(render_scene(HELD_OUT_SEED + 3, SIZE).image, SIZE)
    found = caption_tensor(loaded, image, beam=3)
    assert 1 <= len(found) <= 3
    assert [c.logprob for c in found] == sorted((c.logprob for c in found), reverse=True)
    words = loaded.words
    for cap in found:
        assert words.start not in cap.ids and words.end not in cap.ids and cap.logprob < 0
        # The reported log-prob is the model's: sum over the words and <END>, read by teacher forcing.
        seq = torch.tensor([[words.start, *cap.ids, words.end]])
        with torch.no_grad():
            logp = torch.log_softmax(loaded.captioner(image.unsqueeze(0), seq[:, :-1]), -1)[0]
        assert logp.gather(1, seq[0, 1:, None]).sum().item() == pytest.approx(cap.logprob, abs=1e-4)
    greedy = caption_tensor(loaded, image, beam=1)[0]
    assert found[0].logprob >= greedy.logprob - 1e-6


def test_seeded_sampling_is_reproducible(tiny: Path) -> None:
    loaded = load_captioner(tiny)
    image = image_tensor(render_scene(5, SIZE).image, SIZE)
    first = caption_tensor(loaded, image, temperature=1.5, seed=7, count=4)
    assert [c.text for c in first] == [c.text for c in caption_tensor(loaded, image, temperature=1.5, seed=7, count=4)]
    assert len(first) == 4 and [c.logprob for c in first] == sorted((c.logprob for c in first), reverse=True)
    others = {c.text for s in range(8) for c in caption_tensor(loaded, image, temperature=3.0, seed=s, count=4)}
    assert len(others) > 1  # different seeds, different captions


# ----- checkpoints ------------------------------------------------------------------------------


def _saved(tmp_path: Path) -> tuple[Path, Captioner]:
    model = small_model(seed=3)
    words = WordVocab(["<PAD>", START, END, "<UNK>", *"abcdefg"])
    arch_card = ModelCard.model_validate(
        {"name": "cap", "kind": "captioner", "architecture": {"vocab_size": 11},
         "encoder": {"channels": [8], "feature": 1}, "weights": {"sha256": ""}}
    )  # fmt: skip
    save_captioner(tmp_path / "cap", model, words, arch_card)
    return tmp_path / "cap", model


def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    folder, model = _saved(tmp_path)
    loaded = load_captioner(folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.captioner.state_dict()[name]), name
    image = torch.rand(3, 32, 32)
    assert model.beam_search(image) == loaded.captioner.beam_search(image)
    card = ModelCard.read(folder / "plugin.toml")
    assert card.kind == "captioner" and card.encoder is not None and card.encoder.channels == [8, 16]


def test_corrupt_or_mismatched_weights_are_rejected(tmp_path: Path) -> None:
    folder, _ = _saved(tmp_path)
    weights = folder / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256"):
        load_captioner(folder)
    folder, _ = _saved(tmp_path / "again")
    card = (folder / "plugin.toml").read_text().replace("hidden = 24", "hidden = 32")
    (folder / "plugin.toml").write_text(card)
    with pytest.raises(CheckpointError, match="shape"):
        load_captioner(folder)
    with pytest.raises(CheckpointError, match="not a text model"):
        load_model(folder)  # the text-model loader refuses a captioner folder cleanly
    without_encoder = {k: v for k, v in tomllib.loads(card).items() if k != "encoder"}
    (folder / "plugin.toml").write_text(tomli_w.dumps(without_encoder))
    with pytest.raises(CheckpointError, match="encoder"):
        load_captioner(folder)


# ----- synthetic scenes and BLEU ------------------------------------------------------------------

_NOUN = r"a (small |big )?(red|green|blue|yellow|purple) (circle|square|triangle)"
_WHERE = r"(in the middle|on the (left|right)|at the (top|bottom)|in the (top|bottom) (left|right) corner)"
_TEMPLATES = [
    rf"(there is )?{_NOUN}( {_WHERE})?",
    r"(two|three) (red|green|blue|yellow|purple) (circle|square|triangle)s( side by side| in a row)?",
    rf"{_NOUN} (above|below|to the left of|and) {_NOUN}",
    rf"(from left to right )?{_NOUN}, {_NOUN} and {_NOUN}",
]


def test_scenes_are_deterministic_and_captions_grammatical() -> None:
    a, b = render_scene(11, 48), render_scene(11, 48)
    assert a.image.tobytes() == b.image.tobytes() and a.captions == b.captions
    assert render_scene(12, 48).image.tobytes() != a.image.tobytes()
    assert render_scene(11, 96).image.size == (96, 96) and render_scene(11, 96).captions == a.captions
    counts = set()
    for seed in range(400):
        scene = render_scene(seed, 8)
        counts.add(len(scene.objects))
        for caption in scene.captions:
            assert any(re.fullmatch(t, caption) for t in _TEMPLATES), caption
            assert names_every_object(caption, scene.objects), caption
    assert counts == {1, 2, 3}


def test_bleu_matches_hand_computed_values() -> None:
    ref = [["a", "red", "circle", "on", "the", "left"]]
    assert corpus_bleu([ref[0]], [ref])["bleu4"] == pytest.approx(1.0)
    half = corpus_bleu([["a", "red", "square", "on", "the", "left"]], [ref])
    assert half["bleu1"] == pytest.approx(5 / 6) and half["bleu2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5)
    assert corpus_bleu([["blue"]], [ref])["bleu4"] == 0.0


def test_a_briefly_trained_captioner_names_the_colour(tiny: Path) -> None:
    loaded = load_captioner(tiny)
    scenes = [s for s in (render_scene(HELD_OUT_SEED + i, SIZE) for i in range(150)) if len(s.objects) == 1]
    right = sum(
        s.objects[0].colour in caption_tensor(loaded, image_tensor(s.image, SIZE))[0].text.split() for s in scenes
    )
    assert right / len(scenes) > 0.8  # chance: 1 in 5


# ----- unsafe images ------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb: hardly any data follows)."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", zlib.compress(bytes(64))) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (png_bytes(Image.new("RGB", (64, 64), "red"), "JPEG")[:300], "truncated"),
        (_png_header(60_000, 60_000), "too large"),
        (_png_header(MAX_SIDE + 1, 2), "limit"),
    ],
)
def test_bad_images_get_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        open_image(data)


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "LA", "L", "P", "1", "I;16"])
def test_every_mode_is_converted_to_rgb(mode: str) -> None:
    image = Image.new("RGB", (20, 10), (200, 30, 30)).convert(mode) if mode != "I;16" else Image.new("I;16", (20, 10))
    out = open_image(png_bytes(image, "JPEG" if mode == "CMYK" else "PNG"))
    assert out.mode == "RGB" and out.size == (20, 10)
    assert image_tensor(out, 16).shape == (3, 16, 16)


@pytest.mark.parametrize("mode", ["I", "F", "I;16"])
def test_wide_in_memory_modes_are_stretched_to_8_bits(mode: str) -> None:
    ramp = Image.linear_gradient("L").resize((40, 40)).convert("I").point(lambda v: v * 200)  # 0..51,000
    image = ramp.convert("F") if mode == "F" else ramp if mode == "I" else _i16(ramp)
    tensor = image_tensor(image, 16)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 16, 16)
    assert tensor.min().item() < 0.05 and tensor.max().item() > 0.95  # the full range, not clipped at 255


def _i16(image: Image.Image) -> Image.Image:
    """A mode-I image as I;16 (Pillow's convert clips to 8 bits on the way)."""
    return Image.frombytes("I;16", image.size, np.asarray(image, dtype=np.uint16).tobytes())


def test_formats_outside_the_documented_ones_are_refused() -> None:
    with pytest.raises(ImageError, match="PNG, JPEG, GIF, WebP or BMP"):
        open_image(png_bytes(Image.new("RGB", (20, 10), "red"), "TIFF"))


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("P", "GIF")])
def test_large_images_are_shrunk_while_decoding_and_caption_the_same(mode: str, fmt: str) -> None:
    scene = render_scene(HELD_OUT_SEED + 11, 64).image.resize((1600, 1200), Image.Resampling.NEAREST)
    image = _i16(scene.convert("L").convert("I").point(lambda v: v * 257)) if mode == "I;16" else scene.convert(mode)
    data = png_bytes(image, fmt)
    decoded = decode_image(data, fit=SIZE)
    assert decoded.size == (1600, 1200)  # the description keeps the upload's own size
    assert max(decoded.image.size) <= SHRINK_MARGIN * SIZE and decoded.image.mode == "RGB"
    full = image_tensor(open_image(data), SIZE)  # converted at full size, then resized
    assert (image_tensor(decoded.image, SIZE) - full).abs().mean().item() < 0.02


# ----- COCO folders, CLI, REPL, service -------------------------------------------------------------


def _coco_folder(root: Path, n: int = 6) -> Path:
    """A tiny COCO-format folder: rendered scenes saved as JPEG (one CMYK) and PNG (one RGBA)."""
    folder = root / "coco"
    folder.mkdir()
    images, annotations = [], []
    for i in range(n):
        scene = render_scene(100 + i, 48)
        name, picture = f"img{i}.jpg", scene.image
        if i == 1:
            picture = picture.convert("CMYK")
        if i == 2:
            name, picture = f"img{i}.png", picture.convert("RGBA")
        (folder / "images").mkdir(exist_ok=True)
        picture.save(folder / ("images" if i % 2 else "") / name)  # beside captions.json or in images/
        images.append({"id": i + 1, "file_name": name})
        annotations += [{"id": 10 * i + k, "image_id": i + 1, "caption": c} for k, c in enumerate(scene.captions)]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return folder


def test_coco_folder_trains_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    folder = _coco_folder(tmp_path)
    data = CocoCaptions(folder, 16)
    assert data.train_images.shape == (5, 3, 16, 16) and len(data.held_out(10).references) == 1
    added = runner.invoke(app, ["corpus", "add", "scenes", str(folder), "--kind", "captions"])
    assert added.exit_code == 0, added.output
    out = tmp_path / "model"
    trained = runner.invoke(
        app, ["train", "captioner", "--corpus", "scenes", "--out", str(out), "--steps", "3", "--json"]
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.output.splitlines()[-1])["event"] == "done"
    evaluated = runner.invoke(app, ["eval", str(out), "--corpus", "scenes", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert {"bleu1", "bleu2", "bleu3", "bleu4"} <= json.loads(evaluated.output).keys()
    missing = runner.invoke(app, ["train", "captioner", "--corpus", "nope", "--out", str(out), "--steps", "1"])
    assert missing.exit_code == 2 and "not a captions folder" in missing.output


def test_synthetic_scenes_become_a_registered_captions_corpus(tmp_path: Path) -> None:
    made = runner.invoke(app, ["corpus", "synth-scenes", "shapes", "--count", "12", "--size", "16", "--seed", "5"])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["corpus", "show", "shapes", "--json"])
    assert json.loads(shown.output)["kind"] == "captions"
    data = CocoCaptions(Path(json.loads(shown.output)["path"]), 16)
    assert data.held_out(5).references[0] == list(render_scene(5 + 11, 16).captions)


def test_cli_caption_prints_captions_and_rejects_bad_images(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENBOT_PLUGINS_DIR", str(tiny.parent))
    picture = tmp_path / "scene.png"
    render_scene(HELD_OUT_SEED + 1, 64).image.save(picture)
    result = runner.invoke(app, ["caption", str(picture), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["model"] == "captioner" and body["method"] == "beam" and body["captions"][0]["text"]
    assert body["image"].startswith("<image sha256:") and body["image"].endswith("64x64>")
    sampled = runner.invoke(app, ["caption", str(picture), "--temperature", "1.2", "--seed", "3", "--count", "2"])
    assert sampled.exit_code == 0 and len(sampled.output.strip().splitlines()) == 2
    (tmp_path / "bad.jpg").write_bytes(b"GIF89a broken")
    bad = runner.invoke(app, ["caption", str(tmp_path / "bad.jpg")])
    assert bad.exit_code == 2 and "error:" in bad.output


@pytest.fixture
async def service(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GenbotService]:
    monkeypatch.setenv("GENBOT_PLUGINS_DIR", str(tiny.parent))
    async with GenbotService(load_settings()) as svc:
        yield svc


async def test_repl_caption_and_the_stored_row(service: GenbotService, tmp_path: Path) -> None:
    picture = tmp_path / "scene.jpg"
    render_scene(HELD_OUT_SEED + 2, 80).image.save(picture)
    out = io.StringIO()
    repl = Repl(service, out=out)
    await repl.handle(f"/caption {picture}")
    await repl.handle(f"/caption {tmp_path / 'missing.png'}")
    await repl.handle("/caption")
    text = out.getvalue()
    assert "[captioner v1 · beam · <image sha256:" in text and "80x80>" in text
    assert "error: " in text and "cannot read" in text and "needs the path" in text
    row = (await service.history(limit=1))[0]
    assert row.model == "captioner" and row.frontend == "repl" and row.prompt.startswith("<image sha256:")
    assert row.output and row.status == "completed"
    with pytest.raises(InvalidRequest, match="describes images"):
        await service.generate(GenerationRequest(model="captioner", prompt="hi"))
    with pytest.raises(InvalidRequest, match="beam"):
        await service.caption("captioner", picture.read_bytes(), beam=0)


@pytest.mark.skipif(not (BUNDLED / "model.safetensors").is_file(), reason="bundled captioner weights not built")
def test_bundled_captioner_loads_through_the_registry_and_names_shape_and_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genbot.engine.registry import build_registry

    monkeypatch.setenv("GENBOT_PLUGINS", "captioner")
    entry = build_registry(load_settings()).get("captioner")
    assert entry.card is not None and entry.card.kind == "captioner" and entry.card.metrics["bleu4"] >= 0.5
    hits = 0
    for i in range(20):
        scene = render_scene(HELD_OUT_SEED + 500 + i, 64)
        hits += names_every_object(caption_image(entry.loaded, png_bytes(scene.image))[0].text, scene.objects)  # type: ignore[arg-type]
    assert hits >= 18
    for i in range(10):  # drawn larger or smaller than the model's 64 px, then resized
        scene = render_scene(HELD_OUT_SEED + 600 + i, 40 if i % 2 else 128)
        hits += names_every_object(caption_image(entry.loaded, png_bytes(scene.image))[0].text, scene.objects)  # type: ignore[arg-type]
    assert hits >= 27
    disc = Image.new("RGB", (200, 200), (245, 245, 245))
    ImageDraw.Draw(disc).ellipse((70, 70, 130, 130), fill=COLOURS["blue"])
    assert "blue circle" in caption_image(entry.loaded, png_bytes(disc, "JPEG"))[0].text  # type: ignore[arg-type]
    scene = render_scene(HELD_OUT_SEED + 2, 64)  # one big yellow circle
    scene.image.save(tmp_path / "scene.png")
    result = runner.invoke(app, ["caption", str(tmp_path / "scene.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert names_every_object(json.loads(result.output)["captions"][0]["text"], scene.objects)

"""``POST /v1/caption`` against a real uvicorn server: multipart images, bad uploads, size cap."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from genbot.config import bundled_plugins_dir
from genbot.engine.captions import run_caption
from genbot.frontends.api.caption import MAX_CAPTION_BODY_BYTES
from genbot.service import GenbotService
from genbot.training.caption_data import HELD_OUT_SEED
from genbot.training.scenes import render_scene
from tests.helpers import api_server, client


@pytest.fixture
async def api(plugins_dir: Path) -> AsyncIterator[tuple[str, GenbotService]]:
    """A server over alpha, beta and the bundled captioner."""
    shutil.copytree(bundled_plugins_dir() / "captioner", plugins_dir / "captioner")
    async with api_server() as pair:
        yield pair


def png(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


async def test_caption_returns_the_top_captions_and_stores_the_row(api: tuple[str, GenbotService]) -> None:
    url, service = api
    scene = png(render_scene(HELD_OUT_SEED + 7, 64).image)
    async with client(url) as c:
        response = await c.post("/v1/caption", files={"image": ("scene.png", scene, "image/png")})
    body = response.json()
    assert response.status_code == 200, body
    assert (body["model"], body["version"], body["method"], body["beam"]) == ("captioner", 1, "beam", 3)
    assert body["image"].startswith("<image sha256:") and body["image"].endswith("64x64>")
    logprobs = [c["logprob"] for c in body["captions"]]
    assert len(logprobs) == 3 and logprobs == sorted(logprobs, reverse=True) and all(lp < 0 for lp in logprobs)
    assert body["captions"][0]["text"] == " ".join(body["captions"][0]["words"])
    [row] = await service.history(api_key_id="anonymous")
    assert (row.id, row.output, row.frontend) == (body["id"], body["captions"][0]["text"], "api")


async def test_sampled_captions_are_seeded_and_any_mode_is_converted(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    scene = render_scene(HELD_OUT_SEED + 8, 64).image
    form = {"temperature": "1.0", "seed": "5", "count": "2"}
    async with client(url) as c:
        a = (await c.post("/v1/caption", data=form, files={"image": ("a.png", png(scene))})).json()
        b = (await c.post("/v1/caption", data=form, files={"image": ("b.png", png(scene))})).json()
        modes = [await c.post("/v1/caption", files={"image": ("m.png", png(scene.convert(m)))}) for m in ("L", "RGBA")]
    assert a["method"] == "sample" and a["seed"] == 5 and a["captions"] == b["captions"] and len(a["captions"]) == 2
    assert [r.status_code for r in modes] == [200, 200]


async def test_bad_uploads_get_json_errors_and_store_nothing(api: tuple[str, GenbotService]) -> None:
    url, service = api
    scene = png(render_scene(HELD_OUT_SEED + 9, 64).image)
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({}, b"just some text, not a picture", 400, "not an image"),
        ({}, scene[: len(scene) // 2], 400, "truncated"),
        ({}, b"", 400, "empty"),
        ({"model": "alpha"}, scene, 400, "'alpha' generates text, not captions"),
        ({"model": "nope"}, scene, 404, "unknown model 'nope'"),
        ({"beam": "0"}, scene, 422, "beam"),
    ]
    async with client(url) as c:
        for form, data, status, message in cases:
            response = await c.post("/v1/caption", data=form, files={"image": ("x.png", data, "image/png")})
            assert response.status_code == status, (form, response.text)
            assert message in response.json()["error"]["message"], response.text
        inspect = await c.post("/v1/inspect", json={"model": "captioner", "text": "a red circle"})
        missing = await c.post("/v1/caption", data={"model": "captioner"})
        too_big = await c.post("/v1/caption", files={"image": ("big.png", b"\0" * MAX_CAPTION_BODY_BYTES)})
    assert inspect.status_code == 400 and "describes images" in inspect.json()["error"]["message"]
    assert missing.status_code == 422 and "image" in missing.json()["error"]["message"]
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "request_too_large"
    assert await service.history() == []


async def test_without_a_captioner_the_error_says_so(plugins_dir: Path) -> None:
    async with api_server() as (url, _), client(url) as c:
        response = await c.post("/v1/caption", files={"image": ("x.png", b"\x89PNG")})
    assert response.status_code == 400 and "no captioner model is loaded" in response.json()["error"]["message"]


async def test_captions_past_the_cap_get_503_with_retry_after(
    plugins_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(bundled_plugins_dir() / "captioner", plugins_dir / "captioner")
    monkeypatch.setenv("GENBOT_ENGINE__MAX_CONCURRENT_CAPTIONS", "1")
    started, release = threading.Event(), threading.Event()

    def held(*args: Any) -> Any:
        """The real caption, once the test lets the first one finish (it holds the only slot)."""
        started.set()
        release.wait(timeout=60)
        return run_caption(*args)

    monkeypatch.setattr("genbot.service.run_caption", held)
    scene = png(render_scene(HELD_OUT_SEED + 10, 64).image)
    async with api_server() as (url, service), client(url) as c:
        first = asyncio.create_task(c.post("/v1/caption", files={"image": ("a.png", scene)}))
        assert await asyncio.to_thread(started.wait, 30)
        refused = await c.post("/v1/caption", files={"image": ("b.png", scene)})
        release.set()
        done = await first
        again = await c.post("/v1/caption", files={"image": ("c.png", scene)})  # the slot is free again
        rows = await service.history(api_key_id="anonymous")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2", refused.text
    assert "being captioned" in refused.json()["error"]["message"]
    assert (done.status_code, again.status_code) == (200, 200)
    assert len(rows) == 2  # the refused upload stored nothing

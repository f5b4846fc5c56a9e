"""``POST /v1/inspect`` against a real uvicorn server: activations as JSON, PNGs on request, caps, busy."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from genbot.analysis.report import InspectRequest, inspect_model
from genbot.config import load_settings
from genbot.frontends.api import create_app
from genbot.frontends.api.app import running
from genbot.frontends.api.context import INSPECTIONS_AT_ONCE, ApiContext
from genbot.frontends.api.inspect import MAX_INSPECT_CHARS
from genbot.service import GenbotService
from tests.helpers import api_server, client

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def api(plugins_dir: Path) -> AsyncIterator[tuple[str, GenbotService]]:
    """A server with keys not required (loopback) over models alpha and beta."""
    async with api_server() as pair:
        yield pair


async def test_inspect_returns_the_values_of_a_direct_inspection(
    api: tuple[str, GenbotService], corpus_text: str
) -> None:
    url, service = api
    text = corpus_text[:800]
    async with client(url) as c:
        response = await c.post("/v1/inspect", json={"model": "alpha", "text": text, "layer": 0, "unit": 7})
    body = response.json()
    assert response.status_code == 200, body
    assert service.registry is not None
    loaded = service.registry.get("alpha").loaded
    assert loaded is not None
    direct = inspect_model(loaded, InspectRequest(text=text, layer=0, unit=7, render=False))
    assert body["unit"] == {"layer": 0, "index": 7, "kind": "h", "reason": "given"}
    assert body["values"] == direct.values and len(body["values"]) == len(text)
    assert body["surprise"][0] is None and body["surprise"][1:] == direct.surprise[1:]
    assert body["summary"]["chars"] == len(text) and body["png_base64"] is None  # no picture unless asked


async def test_inspect_returns_the_text_the_values_follow(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        response = await c.post("/v1/inspect", json={"model": "alpha", "text": "ROMEO:\n{good} night"})
    body = response.json()
    assert response.status_code == 200, body
    # alpha's corpus has no braces: the model reads the text without them, and the values follow that.
    assert "{" not in body["text"] and "good" in body["text"]
    assert len(body["values"]) == len(body["surprise"]) == len(body["text"]) == body["summary"]["chars"]


async def test_png_true_adds_the_pictures_and_find_reports_the_discovery(
    api: tuple[str, GenbotService], corpus_text: str
) -> None:
    url, _ = api
    found = {"model": "beta", "text": corpus_text[:600], "find": "line-position", "png": True}
    gates = {"model": "alpha", "text": corpus_text[:300], "kind": "gates", "png": True}
    async with client(url) as c:
        a = (await c.post("/v1/inspect", json=found)).json()
        b = (await c.post("/v1/inspect", json=gates)).json()
    assert base64.b64decode(a["png_base64"]).startswith(PNG_SIGNATURE) and a["gates_png_base64"] is None
    assert a["unit"]["reason"] == "found" and a["discovery"]["feature"] == "line-position"
    assert len(a["discovery"]["top"]) == 5 and 0 <= a["discovery"]["baseline"] <= 1
    assert base64.b64decode(b["gates_png_base64"]).startswith(PNG_SIGNATURE)
    assert len(b["gate_saturation"]) == 2 and set(b["gate_saturation"][0]) == {"i", "f", "o"}


async def test_bad_inspections_get_json_errors(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    base: dict[str, object] = {"model": "alpha", "text": "ROMEO: hi"}
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"text": "x" * (MAX_INSPECT_CHARS + 1)}, 422, "text"),
        ({"unit": 999}, 400, "unit must be 0..31 for this model, got 999"),
        ({"layer": 5}, 400, "layer must be 0..1"),
        ({"kind": "r"}, 400, "kind must be one of"),
        ({"find": "rhymes"}, 400, "unknown feature 'rhymes'"),
        ({"model": "nope"}, 404, "unknown model 'nope'"),
        ({"text": "€€€"}, 400, "at least two characters the model knows"),
    ]
    async with client(url) as c:
        for change, status, message in cases:
            response = await c.post("/v1/inspect", json=base | change)
            assert response.status_code == status, (change, response.text)
            assert message in response.json()["error"]["message"], response.text


async def test_inspections_past_the_slots_get_503_with_retry_after(plugins_dir: Path) -> None:
    async with GenbotService(load_settings()) as service:
        app = create_app(service)
        ctx: ApiContext = app.state.genbot
        async with running(app) as url, client(url) as c:
            for _ in range(INSPECTIONS_AT_ONCE):  # as if that many inspections were running
                await ctx.inspections.acquire()
            busy = await c.post("/v1/inspect", json={"model": "alpha", "text": "ROMEO: hi"})
            ctx.inspections.release()
            free = await c.post("/v1/inspect", json={"model": "alpha", "text": "ROMEO: hi"})
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert busy.json()["error"]["type"] == "server_busy"
    assert free.status_code == 200


async def test_the_schema_documents_inspect(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        schema = (await c.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/inspect"]["post"]
    assert {"200", "400", "404", "422", "503"} <= set(operation["responses"])
    body = schema["components"]["schemas"]["InspectBody"]["properties"]
    assert body["text"]["maxLength"] == MAX_INSPECT_CHARS and "png" in body
    assert "png_base64" in schema["components"]["schemas"]["InspectResult"]["properties"]

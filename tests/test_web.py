"""The web playground's files and headers, from a real uvicorn server (the browser tests are in
``test_web_browser.py``): the page at ``/``, its assets, the CSP, the host guard, and the rules its
JavaScript keeps (no HTML sinks, no remote URLs)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from genbot.analysis.features import FEATURES
from genbot.config import load_settings
from genbot.frontends.web import STATIC_DIR
from genbot.frontends.web.routes import CSP
from genbot.service import GenbotService
from tests.helpers import api_server, client

SCRIPTS = sorted(STATIC_DIR.glob("*.js"))
# Ways a script turns a string into markup or code: model output must never meet one of these.
SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function|setTimeout\(\s*['\"`]"
)


@pytest.fixture
async def api(plugins_dir: Path) -> AsyncIterator[tuple[str, GenbotService]]:
    """A server over alpha and beta (keys not required, loopback)."""
    async with api_server() as pair:
        yield pair


async def test_the_page_and_its_assets_are_served_with_the_security_headers(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        page = await c.get("/")
        script = await c.get("/static/app.js")
        style = await c.get("/static/style.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in page.text
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    for response in (page, script, style):
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "set-cookie" not in response.headers
    assert "script-src 'self';" in CSP and "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP


async def test_every_module_the_page_imports_is_served(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        for script in SCRIPTS:
            for name in re.findall(r'from "\./([\w.-]+)"', script.read_text(encoding="utf-8")):
                response = await c.get(f"/static/{name}")
                assert response.status_code == 200, f"{script.name} imports {name}, which is not served"


@pytest.mark.parametrize(
    "path", ["/static/../routes.py", "/static/%2e%2e%2froutes.py", "/static/__init__.py", "/static/", "/static/nope.js"]
)
async def test_only_the_shipped_assets_can_be_fetched(api: tuple[str, GenbotService], path: str) -> None:
    url, _ = api
    async with client(url) as c:
        response = await c.get(path)
    assert response.status_code == 404
    assert "def " not in response.text


async def test_the_host_guard_covers_the_page(api: tuple[str, GenbotService]) -> None:
    url, _ = api
    async with client(url) as c:
        response = await c.get("/", headers={"Host": "attacker.example"})
    assert response.status_code == 400 and "Host" in response.json()["error"]["message"]


async def test_playground_false_serves_the_api_alone(plugins_dir: Path) -> None:
    api = load_settings().api.model_copy(update={"playground": False})
    async with api_server(api) as (url, _), client(url) as c:
        assert (await c.get("/")).status_code == 404
        assert (await c.get("/healthz")).status_code == 200


def test_scripts_render_data_as_text_only() -> None:
    offenders = [
        f"{script.name}:{n}: {line.strip()}"
        for script in SCRIPTS
        for n, line in enumerate(script.read_text(encoding="utf-8").splitlines(), 1)
        if SINKS.search(line)
    ]
    assert offenders == [], "HTML or code sinks in the playground's scripts:\n" + "\n".join(offenders)
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == [], "inline script in index.html"
    assert re.findall(r"\son\w+\s*=", page) == [], "inline event handlers in index.html"
    assert "style=" not in page, "inline styles would need 'unsafe-inline'"


def test_nothing_is_fetched_from_another_host() -> None:
    remote = [
        f"{path.name}: {url}"
        for path in STATIC_DIR.iterdir()
        for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", path.read_text(encoding="utf-8"))
        if not url.startswith("http://www.w3.org/2000/svg")
    ]
    assert remote == []


def test_the_page_offers_exactly_the_features_the_api_knows() -> None:
    source = (STATIC_DIR / "inspect.js").read_text(encoding="utf-8")
    listed = re.search(r"export const FEATURES = \[(.*?)\];", source)
    assert listed is not None
    assert re.findall(r'"([\w-]+)"', listed.group(1)) == list(FEATURES)

"""``GET /`` (the page) and ``GET /static/{name}`` (its scripts, styles and icon), with security headers.

Only files present in ``static/`` when the app starts can be served, looked up by exact name in a
table, so no request path can reach anything else on disk.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from genbot.frontends.api.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is tiny and changes with genbot: always revalidate rather than run a stale script.
    "Cache-Control": "no-cache",
}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


def _content_type(path: Path) -> str:
    """The media type of a static file (JS modules must be served as JavaScript to load at all)."""
    kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith("+xml") else kind


def _assets() -> dict[str, Path]:
    """Servable files by name: the plain files of ``static/``, read once."""
    return {p.name: p for p in sorted(STATIC_DIR.iterdir()) if p.is_file() and not p.name.startswith(".")}


ASSETS = _assets()


def _file(name: str) -> Response:
    """One asset with the security headers (404 JSON for any other name)."""
    path = ASSETS.get(name)
    if path is None:
        raise ApiError(404, f"no such file: {name[:100]!r}", "not_found")
    return Response(path.read_bytes(), media_type=_content_type(path), headers=SECURITY_HEADERS)


@router.get("/")
async def page() -> Response:
    """The playground page."""
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """A script, style sheet or icon of the page."""
    return _file(name)

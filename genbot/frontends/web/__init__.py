"""The web playground: static files served at ``/`` by the HTTP API, talking only to its public routes.

Everything the page needs ships in ``static/`` (no CDN, no build step). Every response from here
carries a strict Content-Security-Policy: scripts only from this server, no inline script, no
plugins, no framing, so model output that reaches the page as text can never run.
"""

from __future__ import annotations

from genbot.frontends.web.routes import STATIC_DIR, router

__all__ = ["STATIC_DIR", "router"]

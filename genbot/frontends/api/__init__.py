"""The HTTP API front end: native, OpenAI-compatible, admin and ops routes over ``GenbotService``."""

from genbot.frontends.api.app import create_app

__all__ = ["create_app"]

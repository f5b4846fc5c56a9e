"""genbot: a plugin-based character-level RNN text-generation bot and HTTP API."""

__version__ = "0.1.0"

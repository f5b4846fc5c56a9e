"""A genbot plugin package using every hook: a generator, a CLI command, an HTTP route and a cog.

The generator's folder is named by ``GENBOT_TEST_DEMO_MODEL`` (the test writes a tiny model there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genbot.hookspecs import GeneratorSpec, hookimpl


@hookimpl
def register_generators(register: Callable[[GeneratorSpec | Path], None]) -> None:
    """Offer the demo model folder."""
    register(Path(os.environ["GENBOT_TEST_DEMO_MODEL"]))


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``genbot demo-hello``."""

    @cli.command("demo-hello")
    def demo_hello(name: str = "world") -> None:
        """Greet from the demo plugin."""
        print(f"hello {name} from the demo plugin")


@hookimpl
def register_routes(app: Any) -> None:
    """Add ``GET /demo/hello``."""

    @app.get("/demo/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "from the demo plugin"}


@hookimpl
def register_cogs(register: Callable[[type], None]) -> None:
    """Add a Cog with one slash command."""
    from discord import app_commands
    from discord.ext import commands

    class DemoCog(commands.Cog):
        def __init__(self, bot: Any) -> None:
            self.bot = bot

        @app_commands.command(name="demo", description="Say hello from the demo plugin")
        async def demo(self, interaction: Any) -> None:
            await interaction.response.send_message("hello from the demo plugin")

    register(DemoCog)

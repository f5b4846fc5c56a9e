"""``genbot init``, ``genbot config``, ``genbot db upgrade``: a commented bot.toml, the settings, the schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from genbot.frontends.cli.common import friendly_errors

app = typer.Typer()
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
@friendly_errors
def init(force: Annotated[bool, typer.Option("--force", help="overwrite an existing bot.toml")] = False) -> None:
    """Write a commented bot.toml (every setting with its default) into the current folder."""
    from genbot.config_file import write_config_file

    path = write_config_file(Path.cwd(), force=force)
    typer.echo(f"wrote {path}")


@app.command()
@friendly_errors
def config() -> None:
    """The effective configuration (bot.toml + environment), secrets masked."""
    from genbot.config import load_settings

    typer.echo(json.dumps(load_settings().masked_dump(), indent=2, default=str))


@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Apply pending migrations to the configured database."""
    from genbot.config import load_settings
    from genbot.service import upgrade_schema

    asyncio.run(upgrade_schema(load_settings()))
    typer.echo("database is at the latest migration")

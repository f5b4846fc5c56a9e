"""``genbot config`` and ``genbot db upgrade``: the effective settings, and the database schema."""

from __future__ import annotations

import asyncio
import json

import typer

from genbot.frontends.cli.common import friendly_errors

app = typer.Typer()
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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

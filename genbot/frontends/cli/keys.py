"""``genbot keys create | list | revoke``: the HTTP API's keys.

Keys are shown once, at creation; only their sha256 is stored.
"""

from __future__ import annotations

from typing import Annotated

import typer

from genbot.frontends.cli.common import emit_json, friendly_errors, with_service

KEY_FIELDS = ("name", "prefix", "admin", "created_at", "last_used_at", "revoked_at")  # never the secret
app = typer.Typer()
keys_app = typer.Typer(help="HTTP API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@friendly_errors
def keys_create(
    name: Annotated[str, typer.Argument(help="a unique name for the key (who or what uses it)")],
    admin: Annotated[bool, typer.Option("--admin", help="may manage corpora, jobs and models")] = False,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    row, key = with_service(lambda service: service.keys.create(name, admin=admin), serving=False)
    typer.echo(key)
    scope = "admin " if row.admin else ""
    typer.echo(f"created {scope}key {row.name!r}; store it now, it is not shown again", err=True)


@keys_app.command("list")
@friendly_errors
def keys_list(json_out: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Every key: name, prefix, scope, created, last used, revoked."""
    for row in with_service(lambda service: service.keys.list(), serving=False):
        if json_out:
            emit_json(row, KEY_FIELDS)
            continue
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        typer.echo(f"{row.name:<20} {row.prefix}…  {'admin' if row.admin else 'user ':<5}  {state:<18} used {used}")


@keys_app.command("revoke")
@friendly_errors
def keys_revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    row = with_service(lambda service: service.keys.revoke(name), serving=False)
    typer.echo(f"revoked key {row.name!r} ({row.prefix}…)")

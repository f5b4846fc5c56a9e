"""``genbot presets list | show | save | delete``: the global presets, and any user's for a look.

The command line is the admin's tool: it saves and deletes the global presets every user may
load, and ``--user`` lists or shows what one user has (the local user's, a Discord user's or an
API key's). Names and values are checked by the same rules as on the API, Discord and the REPL.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from genbot.errors import InvalidRequest, NotFound
from genbot.frontends.cli.common import emit_json, friendly_errors, with_service

app = typer.Typer()
presets_app = typer.Typer(help="Named sampling settings: the global ones, and any user's.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")

Name = Annotated[str, typer.Argument(help="the preset's name (1-64 letters, digits, _ . -)")]
User = Annotated[
    str | None,
    typer.Option(
        "--user",
        metavar="WHO",
        help="a user's presets (and the global ones): local, discord:USER_ID or api:KEY_NAME",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON lines")]


@presets_app.command("list")
@friendly_errors
def presets_list(user: User = None, as_json: AsJson = False) -> None:
    """The global presets, or with --user that user's and then the global ones."""

    async def body(service: Any) -> list[Any]:
        return list(await service.presets.list(await _owner(service, user)))

    rows = with_service(body, serving=False)
    for row in rows:
        if as_json:
            emit_json(row.to_json())
        else:
            typer.echo(f"{row.name:<24} {'global' if row.is_global else 'user':<6}  {row.params.summary()}")
    if not rows and not as_json:
        typer.echo("no presets" + (f" for {user}" if user else " (genbot presets save NAME … makes a global one)"))


@presets_app.command("show")
@friendly_errors
def presets_show(name: Name, user: User = None, as_json: AsJson = False) -> None:
    """One global preset, or with --user the one that user gets by that name (theirs, else the global one)."""

    async def body(service: Any) -> Any:
        return await service.presets.find(await _owner(service, user), name)

    row = with_service(body, serving=False)
    if as_json:
        emit_json(row.to_json())
        return
    typer.echo(f"{row.name} ({'global' if row.is_global else 'user'}, updated {row.updated_at:%Y-%m-%d %H:%M})")
    for key, value in row.params.model_dump(mode="json").items():
        typer.echo(f"  {key:<12} {value}")


@presets_app.command("save")
@friendly_errors
def presets_save(
    name: Name,
    model: Annotated[str | None, typer.Option(help="generator name")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = argmax")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off")] = None,
    top_p: Annotated[float | None, typer.Option(help="1 = off")] = None,
    length: Annotated[int | None, typer.Option(help="characters to generate")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="a fixed seed (the same text each time); default: a new one")] = None,
) -> None:
    """Save a global preset every user may load (replacing one of that name); options left out stay unset."""
    from genbot.service import preset_params

    params = preset_params(
        model=model, temperature=temperature, top_k=top_k, top_p=top_p, length=length, stop=stop or [], seed=seed
    )
    row = with_service(lambda service: service.presets.save(None, name, params), serving=False)
    typer.echo(f"saved global preset {row.name}: {row.params.summary()}")


@presets_app.command("delete")
@friendly_errors
def presets_delete(name: Name) -> None:
    """Delete a global preset (users' own presets of that name stay)."""
    with_service(lambda service: service.presets.delete(None, name), serving=False)
    typer.echo(f"deleted global preset {name}")


async def _owner(service: Any, who: str | None) -> Any:
    """The preset owner ``--user`` names (None: only the global presets)."""
    from genbot.service import Identity

    if who is None:
        return None
    kind, _, key = who.partition(":")
    if who == "local":
        return Identity("cli", user_id="local").preset_owner
    if kind == "discord" and key.isascii() and key.isdigit():
        return Identity("discord", user_id=key).preset_owner
    if kind == "api" and key:
        keys = [row for row in await service.keys.list() if row.name == key]
        if not keys:
            raise NotFound(f"no API key named {key!r} (genbot keys list shows them)")
        return Identity("api", api_key_id=str(keys[0].id)).preset_owner
    raise InvalidRequest(f"--user {who[:60]!r}: use local, discord:USER_ID or api:KEY_NAME")

"""``genbot models [versions | activate | rollback]`` and ``genbot plugins``: the generators and their versions.

Listing loads the plugins without opening the database; the version commands open the service
without loading any model (``serving=False``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from genbot.errors import NotFound
from genbot.frontends.cli.common import emit_json, friendly_errors, with_service

app = typer.Typer()
models_app = typer.Typer(help="Loaded generators with their cards; their versions (versions, activate, rollback).")
app.add_typer(models_app, name="models")


@app.command()
@friendly_errors
def plugins(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every plugin's generators: loaded, or failed with the reason."""
    for entry in _entries():
        if as_json:
            emit_json({"name": entry.name, "status": entry.status, "source": entry.source, "error": entry.error})
        else:
            state = "loaded" if entry.status == "loaded" else f"FAILED: {entry.error}"
            typer.echo(f"{entry.name:<14} {entry.source:<40} {state}")


@models_app.callback(invoke_without_command=True)
@friendly_errors
def models(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Loaded generators with their cards (subcommands: versions, activate, rollback)."""
    if ctx.invoked_subcommand is not None:
        return  # `genbot models versions …`: the subcommand does the work
    for entry in _entries():
        if entry.status != "loaded" or entry.card is None:
            continue
        card = entry.card
        if as_json:
            emit_json(card.model_dump(mode="json"))
            continue
        a = card.architecture
        typer.echo(
            f"{card.name:<14} v{card.version} {a.cell} {a.layers}x{a.hidden} vocab {a.vocab_size}  "
            f"val {card.metrics.get('val_block', '-')}  {card.description}"
        )


def _entries() -> list[Any]:
    from genbot.config import load_settings
    from genbot.service import generators

    return generators(load_settings())


@models_app.command("versions")
@friendly_errors
def models_versions(
    model: Annotated[str, typer.Argument(help="model name")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Every recorded version of a model; * marks the active one."""

    async def body(service: Any) -> list[Any]:
        rows: list[Any] = await service.versions.list(model)
        return rows

    rows = with_service(body, serving=False)
    if not rows:
        raise NotFound(f"no versions recorded for model {model!r}")
    for row in rows:
        if as_json:
            emit_json(row)
        else:
            typer.echo(_version_line(row))


@models_app.command("activate")
@friendly_errors
def models_activate(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version number")],
) -> None:
    """Make a version the active one; running servers switch to it without a restart."""

    async def body(service: Any) -> Any:
        return await service.versions.activate(model, version)

    row = with_service(body, serving=False)
    typer.echo(f"{row.model}: version {row.version} is active")


@models_app.command("rollback")
@friendly_errors
def models_rollback(model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Go back to the version the active one replaced (its parent, else the one before)."""

    async def body(service: Any) -> Any:
        return await service.versions.rollback(model)

    row = with_service(body, serving=False)
    typer.echo(f"{row.model}: rolled back to version {row.version}")


def _version_line(row: Any) -> str:
    """One human-readable line per version."""
    mark = "*" if row.active else " "
    val = "-" if row.val_loss is None else f"{row.val_loss:.4f}"
    parent = f"v{row.parent_version}" if row.parent_version is not None else "-"
    job = f"#{row.job_id}" if row.job_id is not None else "-"
    return (
        f"{mark} v{row.version:<4} val {val:<8} parent {parent:<5} corpus {row.corpus or '-':<16} job {job:<6} "
        f"{row.created_at:%Y-%m-%d %H:%M}  {row.path}"
    )

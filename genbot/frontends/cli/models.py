"""``genbot models [versions | activate | rollback | add | remove | export]`` and ``genbot plugins``.

Listing opens the service, so it shows what a server serves: the plugins' generators and every
model's active version (your own models too); the version commands and your own
models' commands (add a folder ``genbot train`` wrote, remove it, export any version as a plugin
folder) open the service without loading any model (``serving=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genbot.errors import NotFound
from genbot.frontends.cli.common import emit_json, friendly_errors, with_service

COMMAND_FAILURES: list[Any] = []  # plugins whose register_commands raised (filled by genbot's main())

app = typer.Typer()
models_app = typer.Typer(
    help="Loaded generators with their cards; their versions (versions, activate, rollback); "
    "your own models (add, remove, export)."
)
app.add_typer(models_app, name="models")


@app.command()
@friendly_errors
def plugins(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every plugin's generators, where each came from (bundled folder, data folder, package): loaded, or failed."""
    from genbot.plugins import source_kind

    for entry in _entries():
        if not hasattr(entry, "status"):  # a plugin that failed outside its generators (a PluginFailure)
            entry = _failed(entry)
        kind = source_kind(entry.source)
        if as_json:
            emit_json(
                {"name": entry.name, "status": entry.status, "kind": kind, "source": entry.source, "error": entry.error}
            )
        else:
            state = "loaded" if entry.status == "loaded" else f"FAILED: {entry.error}"
            typer.echo(f"{entry.name:<14} {kind:<14} {entry.source:<40} {state}")


def _failed(failure: Any) -> Any:
    """A plugin failure shaped like a failed generator entry, for the listing."""
    from types import SimpleNamespace

    return SimpleNamespace(name=failure.name, status="failed", source=failure.source, error=failure.error, card=None)


@models_app.callback(invoke_without_command=True)
@friendly_errors
def models(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Loaded generators with their cards (subcommands: versions, activate, rollback, add, remove, export)."""
    if ctx.invoked_subcommand is not None:
        return  # `genbot models versions …`: the subcommand does the work
    for entry in _entries():
        if getattr(entry, "status", None) != "loaded" or entry.card is None:
            continue
        card = entry.card
        if as_json:
            emit_json(card.model_dump(mode="json") | {"serving_paths": entry.serving_paths()})
            continue
        a = card.architecture
        typer.echo(
            f"{card.name:<14} v{card.version} {a.cell} {a.layers}x{a.hidden} vocab {a.vocab_size}  "
            f"val {card.metrics.get('val_block', '-')}  {card.description}"
        )


def _entries() -> list[Any]:
    """What a server would serve: the plugins' generators (loaded or failed) and the active versions."""

    async def body(service: Any) -> list[Any]:
        entries: list[Any] = service.models()
        return entries

    entries = with_service(body)
    listed = {entry.name for entry in entries}
    # Plugins whose other hooks failed in this process (register_commands, run by `genbot` itself).
    return entries + [f for f in COMMAND_FAILURES if f.name not in listed]


@models_app.command("versions")
@friendly_errors
def models_versions(
    model: Annotated[str, typer.Argument(help="model name")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Every recorded version of a model; * marks the active one."""
    rows = with_service(lambda service: service.versions.list(model), serving=False)
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
    row = with_service(lambda service: service.versions.activate(model, version), serving=False)
    typer.echo(f"{row.model}: version {row.version} is active")


@models_app.command("rollback")
@friendly_errors
def models_rollback(model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Go back to the version the active one replaced (its parent, else the one before)."""
    row = with_service(lambda service: service.versions.rollback(model), serving=False)
    typer.echo(f"{row.model}: rolled back to version {row.version}")


@models_app.command("add")
@friendly_errors
def models_add(
    name: Annotated[str, typer.Argument(help="the new model's name")],
    folder: Annotated[Path, typer.Argument(help="a model folder `genbot train --out` wrote")],
    description: Annotated[str | None, typer.Option(help="the card's description (default: the folder's)")] = None,
) -> None:
    """Serve a trained folder as model NAME (copied into data_dir/models/NAME/v1); servers pick it up live."""
    row = with_service(lambda service: service.versions.add_model(name, folder, description=description), serving=False)
    typer.echo(f"added model {row.model}: version {row.version} is active ({row.path})")


@models_app.command("remove")
@friendly_errors
def models_remove(
    name: Annotated[str, typer.Argument(help="a model you added or trained (not a bundled one)")],
) -> None:
    """Forget a model of your own: every version and its folders (running servers keep it until restarted)."""
    rows = with_service(lambda service: service.versions.remove_model(name), serving=False)
    typer.echo(f"removed model {name} ({len(rows)} version{'s' if len(rows) != 1 else ''})")


@models_app.command("export")
@friendly_errors
def models_export(
    name: Annotated[str, typer.Argument(help="model name")],
    target: Annotated[Path, typer.Argument(help="a new (or empty) folder to write the plugin into")],
    version: Annotated[int | None, typer.Option(help="version number (default: the active one)")] = None,
) -> None:
    """Write a model version as a plugin folder (plugin.toml, vocab.json, model.safetensors, README.md)."""
    path = with_service(lambda service: service.versions.export_model(name, target, version=version), serving=False)
    typer.echo(f"exported {name} to {path}")


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

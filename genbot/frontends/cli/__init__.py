"""The ``genbot`` command line: one module per command group, composed here.

Each module has its own ``typer.Typer()`` (``app``), merged here without a name, as
``api/app.py`` composes the HTTP routers: its commands (``genbot sample``) and the groups it
adds to it by name (``genbot corpus add``) become genbot's. What every module shares (the error translation,
the one service runner, the one JSON emitter, logging and signals) is in ``common``.

    training    train [charrnn] | train captioner, eval
    generate    repl, sample, caption
    history     history [import | prune], forget
    models      models [versions | activate | rollback | add | remove | export], plugins
    inspect     inspect
    corpus      corpus add | list | show | remove | synth-scenes
    jobs        retrain, worker, jobs list | show | logs | cancel
    schedule    schedule add | list | remove
    keys        keys create | list | revoke
    presets     presets list | show | save | delete
    serve       serve, api
    discord     discord [sync]
    setup       init, config, db upgrade

Here: ``genbot --version``, shell completion (``--install-completion``, ``--show-completion``),
and plugins' commands (``register_commands``), added by ``main()`` before the command runs. Exit
statuses: 0 done, 1 a runtime failure, 2 a usage error (``genbot.errors`` has the table).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

import genbot
from genbot.errors import GenbotError
from genbot.frontends.cli import (
    corpus,
    discord,
    generate,
    history,
    inspect,
    jobs,
    keys,
    models,
    presets,
    schedule,
    serve,
    setup,
    training,
)

log = logging.getLogger("genbot.cli")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    help="genbot: char-RNN text generation bot.",
)
modules = (training, generate, history, models, inspect, corpus, jobs, schedule, keys, presets, serve, discord, setup)
for module in modules:
    app.add_typer(module.app)  # merged: its top-level commands and its named groups join genbot's


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"genbot {genbot.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show genbot's version and exit."),
    ] = False,
) -> None:
    """genbot: char-RNN text generation bot."""


def add_plugin_commands(cli: typer.Typer) -> None:
    """Let the enabled plugins add their commands (``register_commands``); broken settings add none.

    With a bad bot.toml the command itself then says what is wrong, as it would without plugins.
    """
    from genbot.config import load_settings
    from genbot.plugins import add_commands, load_plugins

    try:
        plugins = load_plugins(load_settings())
        add_commands(plugins, cli)
        models.COMMAND_FAILURES.extend(plugins.failures)
    except GenbotError as e:  # ConfigError: the command reports it; a plugin failure is logged
        log.debug("plugin commands not added: %s", e)


def main() -> None:
    """Console-script entry point: plugins' commands join, then the command line runs."""
    add_plugin_commands(app)
    app()

"""The ``genbot`` command line: one module per command group, composed here.

Each module has its own ``typer.Typer()`` (``app``), merged here without a name, as
``api/app.py`` composes the HTTP routers: its commands (``genbot sample``) and the groups it
adds to it by name (``genbot corpus add``) become genbot's. What every module shares (the error translation,
the one service runner, the one JSON emitter, logging and signals) is in ``common``.

    training    train [charrnn] | train captioner, eval
    generate    repl, sample, caption
    history     history, forget
    models      models [versions | activate | rollback], plugins
    inspect     inspect
    corpus      corpus add | list | show | remove | synth-scenes
    jobs        retrain, worker, jobs list | show | logs | cancel
    schedule    schedule add | list | remove
    keys        keys create | list | revoke
    serve       serve, api
    discord     discord [sync]
    setup       config, db upgrade
"""

from __future__ import annotations

import typer

from genbot.frontends.cli import (
    corpus,
    discord,
    generate,
    history,
    inspect,
    jobs,
    keys,
    models,
    schedule,
    serve,
    setup,
    training,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="genbot: char-RNN text generation bot.",
)
for module in (training, generate, history, models, inspect, corpus, jobs, schedule, keys, serve, discord, setup):
    app.add_typer(module.app)  # merged: its top-level commands and its named groups join genbot's


def main() -> None:
    """Console-script entry point."""
    app()

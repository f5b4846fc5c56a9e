"""A third-party plugin *package* (tests/plugin_package), installed with pip, plugs into every front end.

It declares two entry points in the ``genbot`` group: ``demo`` adds a generator, a CLI command,
an HTTP route and a Discord cog; ``demo_broken`` raises in its hooks and must be skipped with
its reason while everything else loads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from genbot.config import load_settings
from genbot.engine.registry import build_registry
from genbot.plugins import add_commands, load_plugins, source_kind
from genbot.testing.fake_discord import FakeDiscord
from tests.helpers import api_server, client, genbot, write_model_folder

PACKAGE = Path(__file__).resolve().parent / "plugin_package"


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package pip-installed (real dist-info with its entry points) into a folder of its own."""
    base = tmp_path_factory.mktemp("plugin-package")
    source = base / "src"
    shutil.copytree(PACKAGE, source)  # the build's scratch files stay out of the repository
    target = base / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def demo(
    installed_package: Path, tmp_path: Path, corpus_text: str, plugins_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The package on sys.path (so importlib.metadata sees its entry points) and its model folder."""
    monkeypatch.syspath_prepend(str(installed_package))
    folder = write_model_folder(tmp_path / "demo-model", "demo", corpus_text, seed=9)
    monkeypatch.setenv("GENBOT_TEST_DEMO_MODEL", str(folder))
    yield folder
    for name in [m for m in sys.modules if m.startswith("genbot_demo_plugin")]:
        del sys.modules[name]


def test_the_packages_generator_is_served_with_its_source(demo: Path) -> None:
    settings = load_settings()
    plugins = load_plugins(settings)
    assert plugins.sources["demo"] == "entrypoint:genbot-demo-plugin"
    entries = {e.name: e for e in build_registry(settings, plugins).list()}
    assert {name: e.status for name, e in entries.items()} == {"alpha": "loaded", "beta": "loaded", "demo": "loaded"}
    assert source_kind(entries["demo"].source) == "package" and source_kind(entries["alpha"].source) == "bundled folder"


async def test_the_packages_route_is_served_and_the_broken_plugin_is_skipped_with_its_reason(demo: Path) -> None:
    async with api_server() as (url, service), client(url) as c:
        hello = await c.get("/demo/hello")
        generated = await c.post("/v1/generate", json={"model": "demo", "prompt": "RO", "length": 10})
        health = await c.get("/healthz")
    assert hello.status_code == 200 and hello.json() == {"hello": "from the demo plugin"}
    assert generated.status_code == 200 and len(generated.json()["text"]) == 10
    assert health.status_code == 200
    assert service.plugins is not None
    [failure] = service.plugins.failures
    assert failure.name == "demo_broken" and "the demo route plugin is broken" in failure.error
    assert failure.source == "entrypoint:genbot-demo-plugin"


def test_the_packages_command_joins_the_cli(demo: Path) -> None:
    cli = typer.Typer()

    @cli.command("version")
    def version() -> None:  # a Typer app with one command of its own, as genbot's has many
        print("0")

    plugins = load_plugins(load_settings())
    add_commands(plugins, cli)
    result = CliRunner().invoke(cli, ["demo-hello", "--name", "tester"])
    assert result.exit_code == 0, result.output
    assert "hello tester from the demo plugin" in result.output
    assert [(f.name, "the demo command plugin is broken" in f.error) for f in plugins.failures] == [
        ("demo_broken", True)
    ]


async def test_the_packages_cog_answers_its_slash_command(demo: Path) -> None:
    from genbot.frontends.discord import GenbotBot
    from tests.helpers import callbacks, opened_service, running_bot

    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service) as bot:
        assert isinstance(bot, GenbotBot) and "DemoCog" in bot.cogs
        call = await fake.slash("demo", [])
        await fake.wait_for(lambda: callbacks(fake, call.token))
        [answer] = callbacks(fake, call.token)
    assert answer["data"]["content"] == "hello from the demo plugin"  # type: ignore[index]


def test_the_packages_command_runs_through_genbot_and_genbot_plugins_shows_it(
    demo: Path, installed_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(installed_package), os.environ.get("PYTHONPATH")]))
    )
    hello = genbot("demo-hello", "--name", "tester")
    assert hello.returncode == 0, hello.stderr
    assert "hello tester from the demo plugin" in hello.stdout
    listed = genbot("plugins")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "package" in rows["demo"] and "loaded" in rows["demo"]
    assert "bundled folder" in rows["alpha"]
    assert "FAILED" in rows["demo_broken"] and "the demo" in rows["demo_broken"]

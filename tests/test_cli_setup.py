"""The ``genbot`` command itself: --version, init, shell completion, and one rule for exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import genbot as genbot_package
from genbot.errors import (
    TABLE,
    Busy,
    CheckpointError,
    ConfigError,
    CorpusError,
    GenbotError,
    ImageError,
    InvalidRequest,
    LeaseLost,
    NotFound,
    PluginLoadError,
    QuotaExceeded,
    RetryLater,
    UnknownModel,
    describe,
)
from genbot.frontends.cli.common import friendly_errors
from tests.helpers import genbot

USAGE, RUNTIME = 2, 1


def test_version_is_the_packages() -> None:
    proc = genbot("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"genbot {genbot_package.__version__}")


def test_init_writes_a_commented_bot_toml_once_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    folder.mkdir()
    proc = genbot("init", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    written = (folder / "bot.toml").read_text(encoding="utf-8")
    assert written.startswith("# genbot runtime configuration, written by `genbot init`")
    tomllib.loads(written)  # valid TOML
    again = genbot("init", cwd=folder)
    assert again.returncode == USAGE and again.stderr.startswith("error: ") and "--force" in again.stderr
    (folder / "bot.toml").write_text("# mine\n", encoding="utf-8")
    assert genbot("init", "--force", cwd=folder).returncode == 0
    assert (folder / "bot.toml").read_text(encoding="utf-8") == written
    shown = genbot("config", cwd=folder)  # genbot reads what init wrote
    assert shown.returncode == 0, shown.stderr


def test_shell_completion_is_offered() -> None:
    # Typer guesses the shell from the process tree (sh under make); its own switch for tests
    # turns the guess off, so the shell is named as a user can name it: --show-completion bash.
    env = os.environ | {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    command = [str(Path(sys.executable).with_name("genbot")), "--show-completion", "bash"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "complete -o default -F _genbot_completion genbot" in proc.stdout, proc.stderr
    assert "--install-completion" in genbot("--help").stdout


def test_the_error_table_says_usage_errors_exit_2_and_runtime_failures_1() -> None:
    usage = [GenbotError, ConfigError, InvalidRequest, UnknownModel, ImageError, CorpusError, CheckpointError, NotFound]
    runtime = [PluginLoadError, LeaseLost, RetryLater, Busy, QuotaExceeded]
    assert set(usage) | set(runtime) == set(TABLE)
    assert {cls.__name__: TABLE[cls].exit_code for cls in usage} == {cls.__name__: USAGE for cls in usage}
    assert {cls.__name__: TABLE[cls].exit_code for cls in runtime} == {cls.__name__: RUNTIME for cls in runtime}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequest("bad length"), USAGE),
        (NotFound("no job with id 9"), USAGE),
        (FileNotFoundError(2, "No such file or directory", "nope.txt"), USAGE),
        (Busy("too many streams", retry_after=1.0), RUNTIME),
        (QuotaExceeded("over the daily quota", retry_after=60.0), RUNTIME),
        (PermissionError(13, "Permission denied", "/srv/out"), RUNTIME),
    ],
)
def test_every_command_exits_by_the_table_with_one_error_line(error: Exception, status: int) -> None:
    cli = typer.Typer()

    @cli.command()
    @friendly_errors
    def fail() -> None:  # what each genbot command is wrapped in
        raise error

    result = CliRunner().invoke(cli, [])
    assert result.exit_code == status
    [line] = result.output.splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.output
    if isinstance(error, GenbotError):
        assert describe(error).exit_code == status


def test_the_real_cli_uses_2_for_usage_errors(plugins_dir: Path) -> None:
    missing = genbot("models", "add")  # Typer's own usage error
    assert missing.returncode == USAGE and "Missing argument" in missing.stderr
    unknown = genbot("models", "remove", "nobody")  # a name that is not there
    assert unknown.returncode == USAGE and unknown.stderr.startswith("error: ")

"""Settings from bot.toml + GENBOT_* environment: precedence, unknown keys, the Discord token."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from genbot.config import (
    EngineSettings,
    SamplingSettings,
    Settings,
    bundled_plugins_dir,
    default_data_dir,
    load_settings,
)
from genbot.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_toml(folder: Path, text: str) -> Path:
    """A bot.toml with ``text`` in ``folder``."""
    path = folder / "bot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./bot.toml here
    settings = load_settings()
    assert settings.config_file is None
    assert settings.data_dir == tmp_path / "data"  # GENBOT_DATA_DIR from conftest
    assert settings.plugins_dir == bundled_plugins_dir()
    assert settings.plugins_enabled is None
    assert settings.sampling.temperature == 0.8 and settings.sampling.max_length == 5000
    assert settings.engine.max_streams_per_model == 128
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'genbot.db'}"


def test_file_values_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENBOT_DATA_DIR")
    path = write_toml(
        tmp_path, 'data_dir = "state"\nlog_level = "debug"\n[engine]\nmax_queue = 3\n[sampling]\ntemperature = 0.5\n'
    )
    monkeypatch.setenv("GENBOT_ENGINE__MAX_QUEUE", "7")
    monkeypatch.setenv("GENBOT_PLUGINS", "alpha, beta")
    settings = load_settings(path)
    assert settings.config_file == path
    assert settings.data_dir == tmp_path / "state"  # relative to the file, not the working directory
    assert settings.log_level == "DEBUG"
    assert settings.engine.max_queue == 7  # env beats the file
    assert settings.sampling.temperature == 0.5  # the file beats the default
    assert settings.plugins_enabled == ["alpha", "beta"]


def test_config_file_from_env_and_from_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_toml(other, "[engine]\nmax_queue = 11\n")
    monkeypatch.setenv("GENBOT_CONFIG", str(other / "bot.toml"))
    assert load_settings().engine.max_queue == 11
    monkeypatch.delenv("GENBOT_CONFIG")
    monkeypatch.chdir(other)
    assert load_settings().engine.max_queue == 11


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "key"),
    [("colour = 'red'\n", "colour"), ("[engine]\nmax_qeue = 3\n", "engine.max_qeue"), ("[extra]\na = 1\n", "extra")],
)
def test_unknown_key_in_file_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert f"{path}: {key}: unknown key" in str(info.value)


@pytest.mark.parametrize("name", ["GENBOT_COLOUR", "GENBOT_PLUGINS_ENABLED"])
def test_unknown_env_variable_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_unknown_nested_env_variable_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBOT_ENGINE__MAX_QEUE", "3")
    with pytest.raises(ConfigError, match="environment variable GENBOT_ENGINE__MAX_QEUE: unknown key"):
        load_settings()


def test_test_suite_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBOT_TEST_DATABASE_URL", "postgresql://x")
    assert load_settings().database_url is None


def _tool_env_names() -> set[str]:
    """GENBOT_* names in bench/ and .ci/run, and those the tests read with os.environ.get (no settings)."""
    root = Path(__file__).resolve().parent.parent
    names = {
        n for f in [*root.glob("bench/*.py"), root / ".ci" / "run"] for n in re.findall(r"GENBOT_\w+", f.read_text())
    }
    names |= {n for f in root.glob("tests/*.py") for n in re.findall(r"environ\.get\(\"(GENBOT_\w+)", f.read_text())}
    settings = {f"GENBOT_{f.upper()}" for f in Settings.model_fields} | {"GENBOT_PLUGINS", "GENBOT_CONFIG"}
    return {n for n in names - settings if "__" not in n}  # GENBOT_<SECTION>__<KEY>: settings too


def test_the_tools_own_variables_use_the_reserved_prefixes_and_are_not_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    tools = _tool_env_names()
    assert {"GENBOT_TEST_DATABASE_URL", "GENBOT_BENCH_RAW_ANCHOR", "GENBOT_BENCH_CORPUS"} <= tools
    assert all(n.startswith(("GENBOT_TEST_", "GENBOT_BENCH_")) for n in tools), sorted(tools)
    for name in tools:
        monkeypatch.setenv(name, "1")
    load_settings()  # none of them is refused as an unknown setting


def test_bench_variables_do_not_break_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBOT_BENCH_RAW_ANCHOR", str(tmp_path / "raw.py"))
    monkeypatch.setenv("GENBOT_BENCH_CORPUS", str(tmp_path / "input.txt"))
    assert load_settings().engine.max_queue == 256
    monkeypatch.setenv("GENBOT_BENCHMARK", "1")  # only the prefix itself is reserved: typos still fail
    with pytest.raises(ConfigError, match="GENBOT_BENCHMARK"):
        load_settings()


def test_bad_value_names_where_it_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path, "[sampling]\ntop_p = 0\n")
    with pytest.raises(ConfigError, match=r"bot\.toml: sampling\.top_p: Input should be greater than 0"):
        load_settings(path)
    write_toml(tmp_path, "")
    monkeypatch.setenv("GENBOT_SAMPLING__LENGTH", "9000")
    with pytest.raises(ConfigError, match="GENBOT_SAMPLING__LENGTH: length 9000 is above max_length 5000"):
        load_settings(path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "data_dir = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_discord_token_comes_from_env_and_is_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "very-secret-token")
    monkeypatch.setenv("GENBOT_DATABASE_URL", "postgresql+asyncpg://bot:hunter2@db/genbot")
    settings = load_settings()
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "very-secret-token"
    dumped = json.dumps(settings.masked_dump())
    assert "very-secret-token" not in dumped and "hunter2" not in dumped
    assert settings.masked_dump()["database_url"] == "postgresql+asyncpg://bot:********@db/genbot"


def test_discord_token_in_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'discord_token = "abc"\n')
    with pytest.raises(ConfigError, match="DISCORD_TOKEN environment variable"):
        load_settings(path)


def test_prefixed_discord_token_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBOT_DISCORD_TOKEN", "abc")
    with pytest.raises(ConfigError, match="set the token with DISCORD_TOKEN"):
        load_settings()


def test_empty_plugin_list_loads_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBOT_PLUGINS", "")
    assert load_settings().plugins_enabled == []


def test_shipped_bot_toml_matches_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENBOT_DATA_DIR")
    monkeypatch.chdir(REPO_ROOT)
    from_file = load_settings(REPO_ROOT / "bot.toml")
    defaults = Settings()
    paths = {"data_dir", "plugins_dir"}
    assert from_file.model_dump(exclude=paths) == defaults.model_dump(exclude=paths)
    assert from_file.plugins_dir.resolve() == defaults.plugins_dir.resolve()
    # The checkout keeps its data beside it; without a bot.toml it is the user data folder.
    assert from_file.data_dir == REPO_ROOT / "data" and defaults.data_dir == default_data_dir()


def test_every_field_is_described() -> None:
    for model in (Settings, SamplingSettings, EngineSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_ci_fails_instead_of_skipping_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"pg_isready": "exit 2", "pg_ctlcluster": "exit 0", "make": "echo make ran; exit 0", "sleep": "exit 0"}
    for name, body in fakes.items():  # PostgreSQL never answers; nothing real is started or run
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = Path(__file__).resolve().parent.parent / ".ci" / "run"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GENBOT_TEST_PG_WAIT_S": "3"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "make ran" not in proc.stdout
    assert "PostgreSQL at 127.0.0.1:5432 is not reachable after 3s" in proc.stderr

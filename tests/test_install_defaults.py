"""Defaults that make sense outside a checkout: the data folder, a generated bot.toml, one version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import genbot
from genbot.config import Settings, load_settings
from genbot.config_file import config_template, write_config_file
from genbot.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, no GENBOT_DATA_DIR, and a user data folder under tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("GENBOT_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return work


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_DATA_HOME is where platformdirs looks on Linux")
def test_without_a_config_the_data_folder_is_the_users(elsewhere: Path, tmp_path: Path) -> None:
    assert load_settings().data_dir == tmp_path / "xdg" / "genbot"


def test_the_environment_and_a_bot_toml_still_win(
    elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (elsewhere / "bot.toml").write_text('data_dir = "state"\n', encoding="utf-8")
    assert load_settings().data_dir == elsewhere / "state"
    monkeypatch.setenv("GENBOT_DATA_DIR", str(tmp_path / "env"))
    assert load_settings().data_dir == tmp_path / "env"


def test_the_written_bot_toml_describes_every_setting_and_loads_as_the_defaults(elsewhere: Path) -> None:
    path = write_config_file()
    assert path == elsewhere / "bot.toml"
    text = path.read_text(encoding="utf-8")
    loaded = load_settings(path)
    paths = {"data_dir", "plugins_dir"}
    assert loaded.model_dump(exclude=paths) == Settings().model_dump(exclude=paths)
    assert loaded.data_dir == Settings().data_dir  # left commented out: still the user data folder

    def described(model: type) -> None:
        for name, field in model.model_fields.items():
            if name == "discord_token":
                assert "discord_token" not in text
                continue
            assert f"# {field.description}" in text, name
            kind = field.annotation
            if isinstance(kind, type) and hasattr(kind, "model_fields"):
                described(kind)

    described(Settings)
    assert "[discord.quotas]" in text and "[api]" in text
    with pytest.raises(ConfigError, match="already exists"):
        write_config_file()
    path.write_text("# mine\n", encoding="utf-8")
    write_config_file(force=True)
    assert path.read_text(encoding="utf-8") == config_template()


def test_one_version_from_the_package_metadata() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert genbot.__version__ == importlib.metadata.version("genbot") == pyproject["project"]["version"]
    shown = subprocess.run(
        [sys.executable, "-c", "import genbot; print(genbot.__version__)"], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == pyproject["project"]["version"]

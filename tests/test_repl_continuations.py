"""``/more``, ``/again``, presets and restored settings in the REPL; ``sample --continue`` and ``history --thread``.

The REPL runs through a pipe, as a script would, and the CLI as a child process: the real command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import genbot_here

pytestmark = pytest.mark.slow  # each test runs the command line two to four times

ENTRY = [sys.executable, "-c", "from genbot.frontends.cli import main; main()"]


def _repl(script: str) -> str:
    proc = subprocess.run([*ENTRY, "repl"], input=script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _rows() -> list[dict[str, Any]]:
    """Every stored generation, oldest first."""
    return [json.loads(line) for line in genbot_here("history", "--json").stdout.splitlines()][::-1]


def test_more_continues_the_last_generation_and_again_repeats_it(plugins_dir: Path) -> None:
    out = _repl("/len 20\n/seed 3\nROMEO:\n/more 10\n/more 12\n/seed random\n/again\n")
    root, first, second, again = _rows()
    assert (first["parent_id"], second["parent_id"]) == (root["id"], first["id"])
    assert first["prompt"] == "ROMEO:" + root["output"] and len(first["output"]) == 10
    assert second["prompt"] == first["prompt"] + first["output"] and len(second["output"]) == 12
    assert (again["prompt"], again["parent_id"], again["max_length"]) == (second["prompt"], first["id"], 12)
    assert again["seed"] != second["seed"]
    assert out.count("[alpha v1 · ") == 4


def test_a_continuation_is_reproduced_by_its_seed_from_the_command_line(plugins_dir: Path) -> None:
    _repl("/len 25\n/seed 6\nJULIET:\n/more 15\n")
    root, child = _rows()
    proc = genbot_here("sample", "--continue", str(root["id"]), "--seed", "6", "--length", "15", "--json")
    again = json.loads(proc.stdout)
    assert again["output"] == child["output"] and again["parent_id"] == root["id"]
    assert again["prompt"] == child["prompt"]
    thread = genbot_here("history", "--thread", str(root["id"])).stdout.splitlines()
    assert [line.split()[0] for line in thread] == [f"#{again['id']}", f"#{child['id']}", f"#{root['id']}"][::-1]
    assert f"← #{root['id']}" in thread[1] and f"← #{root['id']}" in thread[2]
    missing = genbot_here("sample", "--continue", "999999")
    assert missing.returncode == 2 and "error: no generation with id 999999" in missing.stderr + missing.stdout


def test_more_after_a_restart_continues_the_newest_stored_generation(plugins_dir: Path) -> None:
    _repl("/len 10\nROMEO:\n")
    out = _repl("/more 5\n")
    root, child = _rows()
    assert child["parent_id"] == root["id"] and len(child["output"]) == 5
    assert "restored your last settings" in out
    empty = genbot_here("forget", "local")
    assert empty.returncode == 0
    assert "error: /more: nothing generated yet" in _repl("/more\n")


def _settings_tables(out: str) -> list[dict[str, str]]:
    """Each table ``/settings`` printed, as {setting: value}."""
    tables: list[dict[str, str]] = []
    for line in out.splitlines():
        words = line.split(None, 1)
        if words[:1] == ["setting"]:
            tables.append({})
        elif tables and len(words) == 2 and words[0] in {"model", "temperature", "seed", "length", "stop"}:
            tables[-1][words[0]] = words[1].strip()
    return tables


def test_settings_and_presets_survive_a_restart(plugins_dir: Path) -> None:
    _repl("/use beta\n/temp 0.3\n/len 15\n/seed 4\n/stop END\n/save calm\n/temp 1.2\n/seed random\n")
    out = _repl("/settings\n/load calm\n/settings\n/presets\nhello\n")
    restored, loaded = _settings_tables(out)
    assert (restored["model"], restored["temperature"], restored["seed"]) == ("beta", "1.2", "random")
    assert (restored["length"], restored["stop"]) == ("15", "'END'")
    assert (loaded["temperature"], loaded["seed"]) == ("0.3", "4")
    assert "calm" in out.split("/presets")[-1] or any(line.startswith("calm ") for line in out.splitlines())
    [row] = _rows()
    assert (row["model"], row["temperature"], row["seed"], row["max_length"]) == ("beta", 0.3, 4, 15)


def test_bad_preset_names_and_commands_are_refused_and_nothing_is_saved(plugins_dir: Path) -> None:
    out = _repl(
        "/save ../x\n/save _last\n/save\n/load nothing\n/presets delete nope\n/again now\n/more lots\n/presets\n"
    )
    assert out.count("error: preset name") == 2
    assert "error: /save needs a preset name" in out
    assert "error: no preset named 'nothing'" in out and "error: no preset named 'nope'" in out
    assert "error: /again takes no argument" in out and "error: /more needs a whole number" in out
    assert "no presets yet" in out
    assert _rows() == []

"""``genbot repl`` driven through a pipe, as a script would, and the history/forget/plugins commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import genbot_here

ENTRY = [sys.executable, "-c", "from genbot.frontends.cli import main; main()"]


def _repl(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENTRY, "repl"], input=script, capture_output=True, text=True, timeout=120)


def test_piped_repl_runs_commands_and_prompts(plugins_dir: Path) -> None:
    proc = _repl("/use beta\n/models\n/len 30\n/seed 42\n/temp 0.5\nROMEO:\n/history 5\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "alpha" in out and "* beta" in out
    assert "[beta v1 · 30 chars" in out and "seed 42]" in out
    assert "ROMEO:" in out.split("seed 42]")[1]  # /history shows the prompt just made


def test_same_seed_gives_same_text_across_sessions(plugins_dir: Path) -> None:
    script = "/len 40\n/seed 9\nJULIET:\n"

    def generated(out: str) -> str:
        return out.split("seed 9\n", 1)[1].rsplit("\n[alpha", 1)[0]

    first, second = generated(_repl(script).stdout), generated(_repl(script).stdout)
    assert first == second
    assert len(first) == 40


def test_errors_are_shown_and_the_repl_goes_on(plugins_dir: Path) -> None:
    proc = _repl("/use nothing\n/temp hot\n/len -5\nx\n/frobnicate\n/len 5\nok\n")
    assert proc.returncode == 0
    assert "error: unknown model 'nothing'" in proc.stdout
    assert "error: /temp needs a number" in proc.stdout
    assert "max_length" in proc.stdout
    assert "error: unknown command /frobnicate" in proc.stdout
    assert "[alpha v1 · 5 chars" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_ctrl_c_stops_the_generation_not_the_repl(plugins_dir: Path) -> None:
    proc = subprocess.Popen([*ENTRY, "repl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("/len 5000\nROMEO:\n")
    proc.stdin.flush()
    assert "genbot REPL" in proc.stdout.readline()
    proc.stdout.readline()  # "length 5000"
    proc.stdout.read(10)  # generation under way
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    proc.stdin.write("/len 5\nafter\n/quit\n")
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    assert "[stopped]" in rest
    assert "[alpha v1 · 5 chars" in rest
    rows = [json.loads(line) for line in genbot_here("history", "--json").stdout.splitlines()]
    assert [r["status"] for r in rows] == ["completed", "cancelled"]
    assert 10 <= rows[1]["chars"] < 5000


def test_history_json_and_forget(plugins_dir: Path) -> None:
    _repl("/len 5\none\ntwo\n")
    rows = [json.loads(line) for line in genbot_here("history", "--json", "--search", "two").stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["two"]
    assert rows[0]["frontend"] == "repl" and rows[0]["user_id"] == "local"
    proc = genbot_here("forget", "local")
    assert "deleted 2 generation(s) of local" in proc.stdout
    assert genbot_here("history", "--json").stdout == ""


def test_plugins_lists_failures_and_models_lists_cards(plugins_dir: Path) -> None:
    (plugins_dir / "beta" / "vocab.json").write_text("{broken", encoding="utf-8")
    proc = genbot_here("plugins")
    assert proc.returncode == 0
    assert "alpha" in proc.stdout and "loaded" in proc.stdout
    assert "FAILED" in proc.stdout and "vocab" in proc.stdout
    models = genbot_here("models", "--json").stdout.splitlines()
    assert [json.loads(m)["name"] for m in models] == ["alpha"]
    paths = json.loads(models[0])["serving_paths"]
    assert {"prime", "step", "reason"} <= set(paths)


def test_config_masks_the_discord_token(plugins_dir: Path, monkeypatch: object) -> None:
    env = os.environ | {"DISCORD_TOKEN": "secret-token-value"}
    proc = subprocess.run([*ENTRY, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "secret-token-value" not in proc.stdout
    assert json.loads(proc.stdout)["plugins_dir"] == str(plugins_dir)


def test_a_piped_quit_lets_every_generation_before_it_finish(plugins_dir: Path) -> None:
    script = "/len 300\n" + "".join(f"prompt {i}\n" for i in range(3)) + "/quit\n"
    for _ in range(3):  # a few runs: /quit must never cut the last generation short
        proc = _repl(script)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("· 300 chars ·") == 3 and "[stopped]" not in proc.stdout, proc.stdout
    rows = [json.loads(line) for line in genbot_here("history", "--json").stdout.splitlines()]
    assert len(rows) == 9
    assert {(r["status"], r["chars"]) for r in rows} == {("completed", 300)}


@pytest.mark.slow
def test_paste_mode_and_settings_table(plugins_dir: Path) -> None:
    proc = _repl(
        "/len 5\n/paste\nROMEO:\n  JULIET:\n.\n/history 1\n/search juliet\n/search nurse\n/temp 0.5\n/settings\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("'ROMEO:\\n  JULIET:'") == 2  # one prompt, its newline kept; /search finds it
    assert "no generation of yours matches" in proc.stdout
    table = proc.stdout.split("temperature 0.5\n", 1)[1]
    rows = {line.split()[0]: line.split(None, 1)[1].strip() for line in table.splitlines()[2:] if line.strip()}
    assert rows["temperature"] == "0.5" and rows["length"] == "5" and rows["seed"] == "random"
    assert rows["top_k"] == "0 (default)" and rows["model"] == "alpha"


@pytest.mark.slow
def test_paste_ended_by_the_end_of_input_still_generates(plugins_dir: Path) -> None:
    proc = _repl("/len 5\n/history 1\n/paste\nNURSE:\n")
    assert proc.returncode == 0, proc.stderr
    assert "[alpha v1 · 5 chars" in proc.stdout

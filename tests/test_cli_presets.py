"""``genbot presets``: the admin manages global presets and looks at a user's, on a real SQLite file.

The commands run through Typer's runner in this process (the real command line, no child
process); the presets a Discord user and an API key made are stored by the service beforehand.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genbot.errors import InvalidRequest
from genbot.frontends.cli import app
from genbot.service import Identity, parse_preset
from tests.helpers import opened


@pytest.fixture
def cli(plugins_dir: Path) -> CliRunner:
    """A runner over the ``plugins_dir`` models (alpha, beta) and the test's database."""
    return CliRunner()


def lines(output: str) -> list[dict[str, object]]:
    """JSON lines printed by a command."""
    return [json.loads(line) for line in output.splitlines()]


async def _users_presets() -> str:
    """A Discord user's preset ``calm`` and an API key's ``mine``; returns the key's name."""
    async with opened() as service:
        await service.presets.save(Identity("discord", user_id="42").preset_owner, "calm", {"temperature": 0.9})
        row, _ = await service.keys.create("ci")
        await service.presets.save(Identity("api", api_key_id=str(row.id)).preset_owner, "mine", {"length": 3})
    return row.name


def test_global_presets_saved_listed_used_and_deleted(cli: CliRunner) -> None:
    key_name = asyncio.run(_users_presets())
    calm = ["--model", "alpha", "--temperature", "0.2", "--length", "12", "--seed", "5", "--stop", "\n\n"]
    saved = cli.invoke(app, ["presets", "save", "calm", *calm])
    listed = lines(cli.invoke(app, ["presets", "list", "--json"]).output)
    discord_user = lines(cli.invoke(app, ["presets", "list", "--user", "discord:42", "--json"]).output)
    api_key = cli.invoke(app, ["presets", "list", "--user", f"api:{key_name}"]).output
    theirs = json.loads(cli.invoke(app, ["presets", "show", "calm", "--user", "discord:42", "--json"]).output)
    shown = cli.invoke(app, ["presets", "show", "calm"]).output
    samples = [json.loads(cli.invoke(app, ["sample", "--preset", "calm", "--json"]).output) for _ in range(2)]
    deleted = cli.invoke(app, ["presets", "delete", "calm"])
    again = cli.invoke(app, ["presets", "delete", "calm"])
    gone = cli.invoke(app, ["presets", "show", "calm"])
    left = lines(cli.invoke(app, ["presets", "list", "--user", "discord:42", "--json"]).output)
    assert saved.exit_code == 0 and "saved global preset calm: model='alpha', temperature=0.2" in saved.output
    [row] = listed
    assert (row["name"], row["global"]) == ("calm", True)
    assert row["params"] == {
        "model": "alpha", "temperature": 0.2, "top_k": None, "top_p": None, "length": 12, "stop": ["\n\n"],
        "seed_policy": "fixed", "seed": 5,
    }  # fmt: skip
    assert [(p["name"], p["global"]) for p in discord_user] == [("calm", False), ("calm", True)]
    assert "mine" in api_key and "length=3" in api_key and "calm" in api_key
    assert theirs["global"] is False and theirs["params"]["temperature"] == 0.9  # a user's own wins for them
    assert "calm (global" in shown and "seed_policy  fixed" in shown
    assert [(s["model"], s["seed"], len(s["output"])) for s in samples] == [("alpha", 5, 12)] * 2
    assert samples[0]["output"] == samples[1]["output"]  # a fixed seed: the same text each time
    assert deleted.exit_code == 0 and "deleted global preset calm" in deleted.output
    assert again.exit_code == gone.exit_code == 2
    assert "error: no global preset named 'calm'" in again.output and "no global preset named 'calm'" in gone.output
    assert [(p["name"], p["global"]) for p in left] == [("calm", False)]  # the user's own is not touched


def test_bad_names_values_and_users_are_refused_with_the_shared_wording(cli: CliRunner) -> None:
    with pytest.raises(InvalidRequest) as too_hot:  # what the API and Discord say for the same value
        parse_preset({"temperature": 500.0}, "preset 'hot'")
    refusals = {
        ("save", "hot", "--temperature", "500"): f"error: {too_hot.value}",
        ("save", "odd", "--top-p", "0"): "error: preset 'odd': top_p: Input should be greater than 0",
        ("save", "../etc"): "error: preset name '../etc': use 1 to 64 letters",
        ("save", "_last", "--length", "5"): "error: preset name '_last'",  # the REPL's own row
        ("show", "nothing"): "error: no global preset named 'nothing'",
        ("list", "--user", "bogus"): "error: --user 'bogus': use local, discord:USER_ID or api:KEY_NAME",
        ("list", "--user", "api:nobody"): "error: no API key named 'nobody'",
    }
    for argv, message in refusals.items():
        result = cli.invoke(app, ["presets", *argv])
        assert result.exit_code == 2, (argv, result.output)
        assert message in result.output, (argv, result.output)
    nothing = cli.invoke(app, ["presets", "list", "--json"])
    assert nothing.exit_code == 0 and nothing.output == ""  # nothing refused was stored

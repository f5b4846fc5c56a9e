"""The REPL's terminal comforts, key by key: completion, the toolbar, Esc-Enter for a new line."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from genbot.frontends.repl import Repl, prompt_session
from tests.helpers import opened_service, wait_until


@pytest.fixture
async def repl(plugins_dir: Path) -> AsyncIterator[Repl]:
    async with opened_service() as service:
        yield Repl(service, out=io.StringIO())


def completions(repl: Repl, text: str) -> list[str]:
    from genbot.frontends.repl import ReplCompleter

    found = ReplCompleter(repl).get_completions(Document(text), CompleteEvent(completion_requested=True))
    return [c.text for c in found]


async def test_commands_and_model_names_complete(repl: Repl) -> None:
    assert completions(repl, "/te") == ["/temp"]
    assert {"/paste", "/quit", "/settings", "/use", "/history"} <= set(completions(repl, "/"))
    assert completions(repl, "/use a") == ["alpha"]
    assert {"alpha", "beta"} <= set(completions(repl, "/use "))
    assert completions(repl, "/seed r") == ["random"]
    assert completions(repl, "ROMEO") == [] and completions(repl, "/temp 0.") == []


async def test_a_new_command_completes_with_its_arguments(repl: Repl) -> None:
    async def load(arg: str) -> None:
        repl.say(f"loaded {arg}")

    repl.commands["/load"] = load
    repl.arguments["/load"] = lambda: ["villain", "verse"]
    assert completions(repl, "/lo") == ["/load"]
    assert completions(repl, "/load v") == ["villain", "verse"]


async def test_toolbar_shows_what_the_next_prompt_uses(repl: Repl) -> None:
    assert repl.toolbar() == "model alpha  ·  temperature 0.8 (default)  ·  seed random  ·  length 400 (default)"
    await repl.handle("/temp 0.5")
    await repl.handle("/seed 7")
    await repl.handle("/len 30")
    assert repl.toolbar() == "model alpha  ·  temperature 0.5  ·  seed 7  ·  length 30"


async def typed(repl: Repl, keys: str, tmp_path: Path, *, tab: bool = False) -> str:
    """What the REPL's prompt returns after these keystrokes (``tab``: then Tab, then Enter, as a person would)."""
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        session = prompt_session(repl, tmp_path / "history", input=pipe, output=DummyOutput())
        buffer = session.default_buffer
        answer = asyncio.create_task(session.prompt_async("> "))
        pipe.send_text(keys)
        if tab:
            # Completions are found in the background while typing; Tab then picks the first one.
            await wait_until(lambda: asyncio.sleep(0, buffer.complete_state is not None), 10, "completions")
            pipe.send_text("\t")
            await wait_until(lambda: asyncio.sleep(0, len(buffer.text) > len(keys)), 10, "the completion")
            pipe.send_text("\r")
        return str(await asyncio.wait_for(answer, 10))


async def test_esc_enter_is_a_new_line_and_enter_sends(repl: Repl, tmp_path: Path) -> None:
    assert await typed(repl, "ROMEO:\x1b\rJULIET:\r", tmp_path) == "ROMEO:\nJULIET:"


async def test_tab_completes_at_the_prompt(repl: Repl, tmp_path: Path) -> None:
    assert await typed(repl, "/sett", tmp_path, tab=True) == "/settings"
    assert await typed(repl, "/use be", tmp_path, tab=True) == "/use beta"

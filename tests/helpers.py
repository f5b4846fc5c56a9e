"""Helpers the tests share (fixtures are in ``conftest.py``; no test module imports another).

* processes: ``genbot(*args)`` runs the real command line in a child process;
* data: ``make_corpus_text``, ``write_model_folder`` (random weights, no training);
* the service and jobs: ``opened()``, ``wait_until``, ``FAST`` training options, ``statements_on``;
* the HTTP API: ``api_server`` (a live server on loopback), ``client``, ``parse_sse``, ``as_curl``;
* Discord: ``opened_service`` (with slow scripted models), ``running_bot`` on the fake Discord,
  ``OWNER``, ``opt``, ``callbacks``, ``ephemeral_text``, ``finished``, ``pages_of``, ``buttons``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import torch
from sqlalchemy import event

from genbot.config import ApiSettings, load_settings
from genbot.engine.registry import GeneratorEntry
from genbot.frontends.api import create_app
from genbot.frontends.api.app import running
from genbot.networks.card import SamplingDefaults
from genbot.networks.vocab import Vocab
from genbot.service import GenbotService
from genbot.testing import RecordingModel, ScriptedModel, loaded_generator
from genbot.testing.fake_discord import STRING, FakeDiscord, FakeMessage, InjectedInteraction

if TYPE_CHECKING:
    from genbot.frontends.discord import GenbotBot

T = TypeVar("T")
FAST = {"block": 32, "batch": 8, "eval_every": 5}  # training options for a job that ends in seconds


def genbot(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``genbot`` command in a child process (in ``cwd``, default the current folder)."""
    return subprocess.run(
        [sys.executable, "-m", "genbot", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def genbot_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The same command line run by the same CLI code in this process (Typer's runner), as ``genbot`` would.

    For tests of what one command says and does: a child process spends ~3 s importing before it
    runs anything. The entry point itself (``python -m genbot``, plugins' commands, signals) is
    ``genbot``'s to test. An exception the CLI does not turn into an error line is raised here,
    where a child process would print a traceback.
    """
    from typer.testing import CliRunner

    from genbot.frontends.cli import app

    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(["genbot", *args], result.exit_code, result.stdout, result.stderr)


def make_corpus_text(n_chars: int = 20_000, seed: int = 0) -> str:
    """A small, learnable corpus: short dialogue lines with a few names and words."""
    rng = random.Random(seed)
    names = ["ROMEO", "JULIET", "NURSE", "TYBALT"]
    words = [
        "the",
        "and",
        "to",
        "of",
        "my",
        "thou",
        "art",
        "love",
        "night",
        "day",
        "sweet",
        "fair",
        "good",
        "lord",
        "come",
        "go",
        "now",
    ]
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = f"{rng.choice(names)}:\n" + " ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + ".\n\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)[:n_chars]


def write_model_folder(
    folder: Path, name: str, text: str, seed: int = 0, hidden: int = 32, chat_template: str | None = None
) -> Path:
    """A model folder with random weights over ``text``'s characters (fast, no training)."""
    from genbot.networks.card import ModelCard, Weights
    from genbot.networks.charrnn import CharRNN, CharRNNConfig
    from genbot.networks.checkpoint import architecture_of, save_model
    from genbot.networks.vocab import Vocab

    torch.manual_seed(seed)
    vocab = Vocab.from_text(text)
    model = CharRNN(CharRNNConfig(len(vocab), "lstm", 2, hidden, 16))
    card = ModelCard(
        name=name,
        description=f"test model {name}",
        architecture=architecture_of(model.config),
        weights=Weights(sha256=""),
        chat_template=chat_template,
    )
    save_model(folder / name, model, vocab, card)
    return folder / name


@contextlib.asynccontextmanager
async def opened() -> AsyncIterator[GenbotService]:
    """The service on the test's database, without models."""
    async with GenbotService(load_settings(), serving=False) as service:
        yield service


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def statements_on(service: GenbotService, table: str) -> Iterator[list[str]]:
    """The SQL statements the service's real engine runs that read ``table``, collected while inside."""
    assert service.db is not None
    seen: list[str] = []
    engine = service.db.engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if f"FROM {table}" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextlib.asynccontextmanager
async def api_server(
    api: ApiSettings | None = None, clock: Callable[[], float] | None = None
) -> AsyncIterator[tuple[str, GenbotService]]:
    """An open service (settings from the environment) behind a real uvicorn server; yields (url, service).

    ``clock`` (seconds since the epoch) replaces the rate limiters' and the quota policy's clocks, so
    a test's requests share one minute and one UTC day however slowly it runs.
    """
    settings = load_settings()
    async with GenbotService(settings) as service:
        app = create_app(service, api or settings.api)
        if clock is not None:
            app.state.genbot.limiter.clock = app.state.genbot.bad_keys.clock = clock
            service.quotas.clock = lambda: datetime.fromtimestamp(clock(), UTC)
        async with running(app) as url:
            yield url, service


def slow_down(network: Any, delay: float = 0.004) -> None:
    """Make each call the engine makes of ``network`` (``step``, or a native ``decode`` run) take
    ``delay`` seconds longer, same results: a stream that certainly outlasts what a test does to it."""

    def delayed(call: Callable[..., Any]) -> Callable[..., Any]:
        def slow(*args: Any) -> Any:
            time.sleep(delay)
            return call(*args)

        return slow

    for name in ("step", "decode"):
        if callable(getattr(network, name, None)):
            setattr(network, name, delayed(getattr(network, name)))


def slow_down_model(service: GenbotService, name: str, delay: float = 0.004) -> None:
    """``slow_down`` the network of the service's loaded generator ``name``."""
    assert service.registry is not None
    loaded = service.registry.get(name).loaded
    assert loaded is not None, f"{name} is not loaded"
    slow_down(loaded.network, delay)


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a server-sent-events body; data is JSON when it parses."""
    events = []
    for block in text.strip().split("\n\n"):
        event, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data += line[len("data: ") :]
        try:
            events.append((event, json.loads(data)))
        except json.JSONDecodeError:
            events.append((event, data))
    return events


def client(url: str, key: str | None = None) -> httpx.AsyncClient:
    """An httpx client for ``url``, with a Bearer key if given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=30)


def as_curl(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | str | None = None) -> str:
    """A curl command line that repeats a request (the Authorization header left out), for failure messages."""
    parts = ["curl", "-sS", "-X", method, shlex.quote(url)]
    for name, value in (headers or {}).items():
        if name.lower() != "authorization":
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    if body:
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        text = raw.decode("utf-8", "backslashreplace")  # lone surrogates and NULs stay visible and printable
        shown = text if len(text) <= 2000 else f"{text[:2000]}… ({len(text):,} chars)"
        parts += ["--data-binary", shlex.quote(shown)]
    return " ".join(parts)


SCRIPT = "static int probe(struct device *dev)\n{\n\treturn 0;\n}\n\n"
STEP_DELAY_S = 0.0015  # per character: ~2,500 characters take several seconds


def slow_model(name: str, code_fence: str = "") -> GeneratorEntry:
    """A scripted generator that writes SCRIPT slowly (so a reply is edited several times)."""
    vocab = Vocab.from_text(SCRIPT + "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz:")
    model = RecordingModel(ScriptedModel(vocab, SCRIPT), step_delay=STEP_DELAY_S)
    return GeneratorEntry.ok(loaded_generator(model, vocab, name, SamplingDefaults(code_fence=code_fence)), "test")


@contextlib.asynccontextmanager
async def opened_service() -> AsyncIterator[GenbotService]:
    """The service over the test's SQLite file, with the slow scripted models added."""
    async with GenbotService(load_settings()) as service:
        assert service.registry is not None
        service.registry.add(slow_model("slowc", "c"))
        service.registry.add(slow_model("slow"))
        yield service


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeDiscord, service: GenbotService, shards: tuple[int, list[int]] | None = None
) -> AsyncIterator[GenbotBot]:
    """A GenbotBot logged in to the fake and ready (READY + GUILD_CREATE received).

    ``shards`` (shard_count, shard_ids) makes it run only those shards, like one of several processes.
    """
    from genbot.frontends.discord import GenbotBot

    fake.reset_connection()
    settings = service.settings.discord
    if shards is not None:
        settings = settings.model_copy(update={"shard_count": shards[0], "shard_ids": shards[1]})
    bot = GenbotBot(service, settings)
    task = asyncio.create_task(bot.start(FakeDiscord.TOKEN))
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait([task, ready], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the client stopped: show why
        assert ready.done(), "the bot did not become ready"
        yield bot
    finally:
        await bot.close()
        await asyncio.gather(task, return_exceptions=True)


OWNER = FakeDiscord.member(FakeDiscord.OWNER_ID, "olive")  # the application's owner, no server permissions


def buttons(message: FakeMessage) -> dict[str, str]:
    """The buttons on a message: label → custom_id."""
    return {b["label"]: b["custom_id"] for row in message.components for b in row.get("components", [])}


def finished(fake: FakeDiscord, interaction: InjectedInteraction) -> bool:
    """Whether a reply is complete: the Stop button is gone and the last page shows the footer."""
    pages = pages_of(fake, interaction)
    return bool(pages) and "Stop" not in buttons(pages[0]) and "chars/s" in pages[-1].content


def pages_of(fake: FakeDiscord, interaction: InjectedInteraction) -> list[FakeMessage]:
    """The original reply and its follow-ups."""
    original = fake.original(interaction)
    return ([original] if original else []) + fake.followups(interaction)


def opt(name: str, value: object, kind: int = STRING) -> dict[str, object]:
    """One application-command option."""
    return {"name": name, "type": kind, "value": value}


def callbacks(fake: FakeDiscord, token: str) -> list[dict[str, object]]:
    """Bodies of the interaction callbacks answered for ``token``."""
    return [c.body for c in fake.calls_to("POST", rf"/interactions/\d+/{token}/callback") if c.status != 429]


def ephemeral_text(fake: FakeDiscord, token: str) -> str:
    """The ephemeral answer to an interaction (a type-4 callback or a follow-up with flag 64)."""
    for body in callbacks(fake, token):
        data = body.get("data") or {}
        if body["type"] == 4 and isinstance(data, dict) and data.get("flags", 0) & 64:
            return str(data.get("content", ""))
    for call in fake.calls_to("POST", rf"/webhooks/\d+/{token}$"):
        if call.body and call.body.get("flags", 0) & 64:
            return str(call.body.get("content", ""))
    return ""


# ----- the web playground: a browser and a live `genbot serve --api` ------------------------------


def chromium_executable() -> str | None:
    """The Chromium the browser tests drive: GENBOT_TEST_CHROMIUM, else ``chromium`` on the PATH (None: none)."""
    given = os.environ.get("GENBOT_TEST_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def wait_json(url: str, proc: subprocess.Popen[str], timeout: float = 90.0) -> Any:
    """GET ``url`` until it answers JSON; fails with the server's stderr if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            return httpx.get(url, timeout=2).json()
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def job_finished(service: GenbotService, job_id: int) -> Callable[[], Awaitable[Any]]:
    """A check for ``wait_until``: the job's row, once the job has finished (else None)."""

    async def check() -> Any:
        job = await service.jobs.get(job_id)
        return job if job.finished else None

    return check


def processes_mentioning(needle: str) -> list[int]:
    """Ids of live processes whose command line contains ``needle`` (a test's own tmp_path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def kill_processes_mentioning(needle: str) -> None:
    """SIGKILL every process whose command line contains ``needle`` (what a failed test left running)."""
    for pid in processes_mentioning(needle):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

"""``genbot repl``: chat with the loaded generators in a terminal.

Plain lines are prompts; lines starting with ``/`` are commands (``/help`` lists them). Output
streams as it is generated; Ctrl-C stops the current generation, not the REPL; Ctrl-D or
``/quit`` leaves. With stdin a pipe the same commands run from a script, one per line.

At a terminal: Tab completes commands and their arguments (model names, and whatever a command
registers in ``Repl.arguments``), the bottom toolbar shows the settings the next prompt uses,
Esc-Enter starts a new line within one prompt, and ``/paste`` takes lines until a line with
only ``.`` (or Ctrl-D) as one prompt, in a pipe as well.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings
from rich import box
from rich.console import Console
from rich.table import Table

from genbot.errors import GenbotError, InvalidRequest
from genbot.service import GenbotService, Generation, GenerationRequest, Identity, PresetParams, Requester

if TYPE_CHECKING:
    from genbot.analysis.report import InspectRequest

HELP = """\
commands:
  /use MODEL        switch generator            /models        list generators
  /temp X           temperature (0 = argmax)    /len N         characters to generate
  /topk N           top-k (0 = off)             /topp X        top-p (1 = off)
  /seed N|random    fixed seed or a new one     /stop TEXT|off stop when TEXT is generated
  /settings         show current settings       /history [N]   your last N generations
  /more [N]         continue the last generation (N more characters; its settings, your /seed)
  /again            the last prompt again with a new seed (same settings)
  /save NAME        save these settings as a preset             /load NAME     use a saved preset
  /presets          your presets and the global ones            /presets delete NAME
  /search WORDS     your generations that best match: love OR hate, -word, "a phrase"
  /paste            the next lines, up to a line with only ".", are one prompt (or Esc-Enter for a new line)
  /inspect [--find FEATURE] [--layer L] [--unit U] [--kind K] [--surprise] [--gates] TEXT
                    colour TEXT by a unit's activation (or find the unit tracking FEATURE:
                    quotes, line-position, bracket-depth, comment, math, env-depth); writes PNG + HTML
  /caption PATH     describe an image file with the captioner (beam search; sampled with /temp > 0)
  /help             this help                   /quit          leave (or Ctrl-D)
Any other line is a prompt; "\\n" in it stands for a newline. Tab completes. Ctrl-C stops a generation.
Your settings are kept between sessions (restored when the REPL starts)."""
PASTE_END = "."
QUIT = ("/quit", "/exit")


@dataclass
class ReplState:
    """What the next prompt will be generated with."""

    model: str
    temperature: float | None = None
    length: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def to_params(self) -> PresetParams:
        """These settings as a preset (InvalidRequest if one is out of a preset's range)."""
        from genbot.service import parse_preset, preset_params

        settings = preset_params(
            model=self.model or None, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            length=self.length, stop=self.stop, seed=self.seed,
        )  # fmt: skip
        return parse_preset(settings)

    def apply(self, params: PresetParams, models: list[str]) -> None:
        """Take a preset's settings (its model only if it is loaded here)."""
        if params.model and params.model in models:
            self.model = params.model
        self.temperature, self.top_k, self.top_p = params.temperature, params.top_k, params.top_p
        self.length, self.stop = params.length, list(params.stop)
        self.seed = params.seed if params.seed_policy == "fixed" else None


class Repl:
    """Reads lines, runs commands and prompts against the service, writes to ``out``."""

    def __init__(self, service: GenbotService, out: TextIO = sys.stdout, user: str = "local") -> None:
        self.service = service
        self.out = out
        self.user = user
        self.state = ReplState(model=default_model(service))
        self.last_id: int | None = None  # the newest generation of this session (/more, /again)
        self.identity = Identity("repl", user_id=user)
        self.pasting = False  # inside /paste: at a terminal, Ctrl-D ends the paste, not the REPL
        self.commands: dict[str, Callable[[str], Awaitable[None] | None]] = {
            "/use": self._use, "/models": self._models, "/temp": self._temp, "/len": self._len,
            "/topk": self._topk, "/topp": self._topp, "/seed": self._seed, "/stop": self._stop,
            "/settings": self._settings, "/history": self._history, "/help": self._help,
            "/inspect": self._inspect, "/caption": self._caption, "/more": self._more, "/again": self._again,
            "/save": self._save, "/load": self._load, "/presets": self._presets,
            "/search": self._search,
        }  # fmt: skip
        # What Tab offers after a command's name; a command added later registers its own here.
        self.arguments: dict[str, Callable[[], list[str]]] = {
            "/use": self.service.model_names, "/seed": lambda: ["random"], "/stop": lambda: ["off"],
            "/load": lambda: self.preset_names, "/save": lambda: self.preset_names,
            "/presets": lambda: ["delete", *(f"delete {name}" for name in self.preset_names)],
        }  # fmt: skip
        self.preset_names: list[str] = []  # for Tab; refreshed at start and by the preset commands

    def command_names(self) -> list[str]:
        """Every command, as Tab completes them (the ones ``run`` handles itself included)."""
        return sorted([*self.commands, "/paste", *QUIT])

    def toolbar(self) -> str:
        """The bottom toolbar: what the next prompt will be generated with."""
        values = dict(self._effective())
        keys = ("model", "temperature", "seed", "length")
        return "  ·  ".join(f"{key} {values[key]}" for key in keys)

    def _effective(self) -> list[tuple[str, str]]:
        """(setting, value) for the next prompt; a value left unset shows bot.toml's default."""
        s, d = self.state, self.service.settings.sampling

        def shown(value: object, default: object) -> str:
            return f"{default} (default)" if value is None else str(value)

        return [
            ("model", s.model or "(none loaded)"),
            ("temperature", shown(s.temperature, d.temperature)),
            ("seed", "random" if s.seed is None else str(s.seed)),
            ("length", shown(s.length, d.length)),
            ("top_k", shown(s.top_k, d.top_k)),
            ("top_p", shown(s.top_p, d.top_p)),
            ("stop", ", ".join(repr(x) for x in s.stop) or "off"),
        ]

    async def run(self, lines: AsyncIterator[str]) -> None:
        """Handle lines until they end or ``/quit``."""
        await self.restore()
        self.say(f"genbot REPL: model {self.state.model or '(none loaded)'}; /help for commands")
        source = aiter(lines)
        async for line in source:
            if line.strip() in QUIT:
                break
            if line.strip() == "/paste":
                await self._paste(source)
                continue
            await self.handle(line)

    async def _paste(self, source: AsyncIterator[str]) -> None:
        """Lines up to one with only ``.`` (or the end of input) are one prompt, newlines kept."""
        self.say(f'paste the prompt; end it with a line with only "{PASTE_END}" (or Ctrl-D)')
        pasted: list[str] = []
        self.pasting = True
        try:
            async for line in source:
                if line.rstrip("\r\n") == PASTE_END:
                    break
                pasted.append(line.rstrip("\r\n"))
        finally:
            self.pasting = False
        if not any(part.strip() for part in pasted):
            self.say("nothing pasted")
            return
        try:
            await self.generate("\n".join(pasted))
        except GenbotError as e:
            self.say(f"error: {e}")

    async def handle(self, line: str) -> None:
        """One input line: a command or a prompt; genbot errors are shown, never raised."""
        text = line.rstrip("\n")
        if not text.strip():
            return
        try:
            if text.startswith("/"):
                await self._command(text)
            else:
                await self.generate(text.replace("\\n", "\n"))
        except GenbotError as e:
            self.say(f"error: {e}")

    async def _command(self, text: str) -> None:
        name, _, arg = text.partition(" ")
        handler = self.commands.get(name)
        if handler is None:
            raise InvalidRequest(f"unknown command {name}; /help lists them")
        before = dataclasses.replace(self.state, stop=list(self.state.stop))
        result = handler(arg.strip())
        if result is not None:
            await result
        if self.state != before:
            await self._remember()

    async def restore(self) -> None:
        """Start with this user's settings from the last session, if any."""
        await self._refresh_preset_names()
        params = await self.service.presets.last_used(self.identity.preset_owner)
        if params is not None:
            self.state.apply(params, self.service.model_names())
            self.say(f"restored your last settings: {params.summary()}")

    async def _refresh_preset_names(self) -> None:
        self.preset_names = [row.name for row in await self.service.presets.list(self.identity.preset_owner)]

    async def _remember(self) -> None:
        """Keep the settings for the next session; settings no preset could hold are not kept."""
        try:
            params = self.state.to_params()
        except InvalidRequest:
            return  # e.g. /len -5: the next generation says what is wrong with it
        await self.service.presets.remember(self.identity.preset_owner, params)

    async def generate(self, prompt: str) -> None:
        """Stream one generation of ``prompt`` with the current settings."""
        s = self.state
        await self._stream(
            GenerationRequest(
                model=s.model,
                prompt=prompt,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                length=s.length,
                seed=s.seed,
                stop=s.stop,
                requester=Requester(frontend="repl", user_id=self.user),
            )
        )

    async def _stream(self, req: GenerationRequest) -> None:
        """Stream one generation to the terminal; Ctrl-C cancels it."""
        gen = await self.service.generate(req)
        self.last_id = gen.id
        self._warn_unknown(gen)
        with _cancel_on_sigint(gen):
            async for chunk in gen:
                self.out.write(chunk)
                self.out.flush()
        result = await gen.result()
        st = result.stats
        tail = " [stopped]" if result.status == "cancelled" else ""
        self.say(
            f"\n[{gen.model} v{gen.version} · {st.eval_count} chars · {st.chars_per_s:,.0f} chars/s · "
            f"seed {gen.params.seed}]{tail}"
        )

    def _warn_unknown(self, gen: Generation) -> None:
        if gen.mapped:
            pairs = ", ".join(f"{k!r}→{v!r}" for k, v in gen.mapped.items())
            self.say(f"note: {gen.model} does not know some characters; replaced {pairs}")
        if gen.dropped:
            self.say(f"note: {gen.model} has never seen {''.join(sorted(set(gen.dropped)))!r}; left out")

    def say(self, text: str) -> None:
        """Write a line of REPL chatter."""
        self.out.write(text + "\n")
        self.out.flush()

    # ----- commands ----------------------------------------------------------------------------

    def _use(self, arg: str) -> None:
        self.service.model(arg)  # UnknownModel before switching
        self.state.model = arg
        self.say(f"using {arg}")

    def _models(self, _: str) -> None:
        for entry in self.service.models():
            if entry.status == "loaded" and entry.card is not None:
                mark = "*" if entry.name == self.state.model else " "
                self.say(f"{mark} {entry.name:<14} {entry.card.description}")
            else:
                self.say(f"  {entry.name:<14} FAILED: {entry.error}")

    def _temp(self, arg: str) -> None:
        self.state.temperature = _float(arg, "/temp")
        self.say(f"temperature {self.state.temperature}")

    def _len(self, arg: str) -> None:
        self.state.length = _int(arg, "/len")
        self.say(f"length {self.state.length}")

    def _topk(self, arg: str) -> None:
        self.state.top_k = _int(arg, "/topk")
        self.say(f"top-k {self.state.top_k}")

    def _topp(self, arg: str) -> None:
        self.state.top_p = _float(arg, "/topp")
        self.say(f"top-p {self.state.top_p}")

    def _seed(self, arg: str) -> None:
        self.state.seed = None if arg in ("", "random", "off") else _int(arg, "/seed")
        self.say(f"seed {self.state.seed if self.state.seed is not None else 'random'}")

    def _stop(self, arg: str) -> None:
        self.state.stop = [] if arg in ("", "off") else [arg.replace("\\n", "\n")]
        self.say(f"stop {self.state.stop!r}")

    def _settings(self, _: str) -> None:
        table = Table("setting", "value", box=box.SIMPLE_HEAD, show_edge=False)
        for name, value in self._effective():
            table.add_row(name, value)
        Console(file=self.out, width=100, color_system=None, highlight=False).print(table)

    async def _history(self, arg: str) -> None:
        rows = await self.service.history(user_id=self.user, limit=_int(arg, "/history") if arg else 5)
        for row in reversed(rows):
            text = row.output.replace("\n", " ")
            self.say(f"#{row.id} {row.created_at:%H:%M:%S} {row.model} [{row.status}] {row.prompt!r} → {text[:60]!r}")

    async def _more(self, arg: str) -> None:
        length = _int(arg, "/more") if arg else None
        parent = await self._last("/more")
        await self._stream(
            GenerationRequest(
                model="",
                length=length,
                seed=self.state.seed,
                requester=Requester(frontend="repl", user_id=self.user),
                continue_from=parent,
            )
        )

    async def _again(self, arg: str) -> None:
        if arg:
            raise InvalidRequest("/again takes no argument: it repeats the last generation with a new seed")
        original = await self._last("/again")
        await self._stream(
            GenerationRequest(model="", requester=Requester(frontend="repl", user_id=self.user), again_of=original)
        )

    async def _last(self, command: str) -> int:
        """The generation /more and /again work on: this session's last, else this user's newest stored one."""
        if self.last_id is not None:
            return self.last_id
        rows = await self.service.history(user_id=self.user, limit=1)
        if not rows:
            raise InvalidRequest(f"{command}: nothing generated yet")
        return rows[0].id

    async def _save(self, arg: str) -> None:
        if not arg:
            raise InvalidRequest("/save needs a preset name")
        row = await self.service.presets.save(self.identity.preset_owner, arg, self.state.to_params())
        await self._refresh_preset_names()
        self.say(f"saved preset {row.name}: {row.params.summary()}")

    async def _load(self, arg: str) -> None:
        if not arg:
            raise InvalidRequest("/load needs a preset name (/presets lists them)")
        row = await self.service.presets.find(self.identity.preset_owner, arg)
        if row.params.model and row.params.model not in self.service.model_names():
            raise InvalidRequest(f"preset {row.name} uses {row.params.model!r}, which is not loaded here")
        self.state.apply(row.params, self.service.model_names())
        self.say(f"loaded preset {row.name}: {row.params.summary()}")

    async def _presets(self, arg: str) -> None:
        action, _, name = arg.partition(" ")
        if action == "delete":
            await self.service.presets.delete(self.identity.preset_owner, name.strip())
            await self._refresh_preset_names()
            self.say(f"deleted preset {name.strip()}")
            return
        if action:
            raise InvalidRequest("/presets lists your presets; /presets delete NAME removes one")
        rows = await self.service.presets.list(self.identity.preset_owner)
        for row in rows:
            self.say(f"{row.name:<20} {'(global) ' if row.is_global else ''}{row.params.summary()}")
        if not rows:
            self.say("no presets yet: /save NAME keeps the current settings")

    async def _search(self, arg: str) -> None:
        rows = await self.service.history(user_id=self.user, query=arg, limit=10)
        if not rows:
            self.say("no generation of yours matches")
        for row in rows:  # best match first
            text = row.output.replace("\n", " ")
            self.say(f"#{row.id} {row.created_at:%Y-%m-%d %H:%M} {row.model} {row.prompt!r} → {text[:60]!r}")

    def _help(self, _: str) -> None:
        self.say(HELP)

    async def _inspect(self, arg: str) -> None:
        report = await self.service.inspect(self.state.model, inspect_request(arg))
        folder = self.service.settings.data_dir / "inspect" / f"{report.model}-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"
        paths = await asyncio.to_thread(_write_files, folder, report.files)
        for line in report.lines():
            self.say(line)
        for path in paths:
            self.say(f"wrote {path}")

    async def _caption(self, arg: str) -> None:
        if not arg:
            raise InvalidRequest("/caption needs the path of an image file")
        path = Path(arg).expanduser()
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as e:
            raise InvalidRequest(f"{path}: cannot read the file ({e.strerror or e})") from e
        s = self.state
        sampled = s.temperature if s.temperature else None  # /temp 0 (argmax) or unset: beam search
        result = await self.service.caption(
            _captioner_for(self.service, s.model),
            data,
            temperature=sampled,
            seed=s.seed,
            requester=Requester("repl", user_id=self.user),
        )
        for c in result.captions:
            self.say(f"{c.logprob:8.3f}  {c.text}")
        self.say(
            f"[{result.model} v{result.version} · {result.method} · {result.image} · {result.duration_ms:,.0f} ms]"
        )


def _captioner_for(service: GenbotService, current: str) -> str:
    """The current model if it is a captioner, else the first loaded captioner."""
    captioners = [e.name for e in service.models() if e.status == "loaded" and e.card and e.card.kind == "captioner"]
    if not captioners:
        raise InvalidRequest("no captioner is loaded")
    return current if current in captioners else captioners[0]


_INSPECT_INTS = {"--layer": "layer", "--unit": "unit", "--top": "top_k"}
_INSPECT_FLAGS = {"--surprise": "surprise", "--gates": "gates"}


def inspect_request(arg: str) -> InspectRequest:
    """``/inspect``'s options (``--find F --layer L --unit U --kind K --top N --surprise --gates``) and text."""
    from genbot.analysis.report import InspectRequest

    fields: dict[str, Any] = {}
    rest = arg
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        if option in _INSPECT_FLAGS:
            fields[_INSPECT_FLAGS[option]] = True
            continue
        value, _, rest = rest.lstrip().partition(" ")
        if option in _INSPECT_INTS:
            fields[_INSPECT_INTS[option]] = _int(value, f"/inspect {option}")
        elif option in ("--find", "--kind"):
            fields[option[2:]] = value
        else:
            raise InvalidRequest(f"/inspect has no option {option}; /help lists them")
        rest = rest.lstrip()
    if not rest.strip():
        raise InvalidRequest("/inspect needs a text after its options")
    return InspectRequest(rest.replace("\\n", "\n"), **fields)


def _write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write rendered views into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def default_model(service: GenbotService) -> str:
    """Shakespeare if it loaded, else the first loaded generator, else ""."""
    names = service.model_names()
    return "shakespeare" if "shakespeare" in names else (names[0] if names else "")


def _int(arg: str, command: str) -> int:
    try:
        return int(arg)
    except ValueError:
        raise InvalidRequest(f"{command} needs a whole number, got {arg!r}") from None


def _float(arg: str, command: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise InvalidRequest(f"{command} needs a number, got {arg!r}") from None


class _cancel_on_sigint:
    """While a generation streams, Ctrl-C cancels it instead of stopping the REPL."""

    def __init__(self, gen: Generation) -> None:
        self.gen = gen
        self.loop = asyncio.get_running_loop()
        self.installed = False

    def __enter__(self) -> None:
        try:
            self.loop.add_signal_handler(signal.SIGINT, self.gen.cancel)
            self.installed = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            self.loop.remove_signal_handler(signal.SIGINT)


async def piped_lines(stream: TextIO = sys.stdin) -> AsyncIterator[str]:
    """Lines of a non-interactive stdin, read off the event loop."""
    while True:
        line = await asyncio.to_thread(stream.readline)
        if not line:
            return
        yield line


class ReplCompleter(Completer):
    """Tab completion: command names, then the arguments the command registered in ``Repl.arguments``."""

    def __init__(self, repl: Repl) -> None:
        self.repl = repl

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Any:
        """Completions of the word before the cursor (only on a command line's first line)."""
        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        name, space, arg = text.partition(" ")
        if not space:
            candidates, typed = self.repl.command_names(), name
        else:
            source = self.repl.arguments.get(name)
            candidates, typed = (source() if source else []), arg.lstrip()
        for candidate in candidates:
            if candidate.startswith(typed) and candidate != typed:
                yield Completion(candidate, start_position=-len(typed))


def key_bindings() -> KeyBindings:
    """Esc-Enter (Alt-Enter) puts a newline into the prompt; Enter sends it."""
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


def prompt_session(repl: Repl | None, history_file: Path, **io: Any) -> Any:
    """The prompt_toolkit session of the REPL: history, completion, toolbar, Esc-Enter (``io``: input/output)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history_file.parent.mkdir(parents=True, exist_ok=True)
    extras: dict[str, Any] = {}
    if repl is not None:
        extras = {"completer": ReplCompleter(repl), "bottom_toolbar": repl.toolbar, "complete_while_typing": True}
    return PromptSession(
        history=FileHistory(str(history_file)),
        key_bindings=key_bindings(),
        prompt_continuation=lambda width, line_number, wrap_count: "." * (width - 1) + " ",
        **extras,
        **io,
    )


async def terminal_lines(history_file: Path, prompt: Callable[[], str], repl: Repl | None = None) -> AsyncIterator[str]:
    """Lines typed at a prompt_toolkit prompt with history; Ctrl-C clears the line, Ctrl-D ends."""
    session = prompt_session(repl, history_file)
    while True:
        try:
            yield await session.prompt_async(prompt())
        except KeyboardInterrupt:
            continue
        except EOFError:
            if repl is not None and repl.pasting:
                yield PASTE_END
                continue
            return

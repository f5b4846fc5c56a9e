"""Shared parts of genbot's benchmarks: the raw yardstick, stand-in models, verdicts, output.

Every benchmark runs genbot's own code and the plain-PyTorch yardstick (``raw_charrnn.py``) in
the same run and reports ratios, because absolute times on shared machines are noise. Each one
prints a human table, then one JSON line, and writes that JSON to ``bench/results/NAME.json``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
RAW_ENV = "GENBOT_BENCH_RAW_ANCHOR"  # GENBOT_BENCH_*: not settings (genbot/config.py)
DEFAULT_RAW = Path("..") / "shared" / "anchors" / "raw_charrnn.py"  # relative to the repo root
CORPUS_ENV = "GENBOT_BENCH_CORPUS"
DEFAULT_CORPUS = Path("..") / "shared" / "corpora" / "shakespeare" / "input.txt"
DEFAULT_PLUGINS = REPO / "plugins"
# The character set of tiny-shakespeare (65 characters): stand-in models use it, so a
# Shakespeare prompt encodes completely whether or not the bundled weights exist.
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PASSAGE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n"
)
PROMPT_200 = _PASSAGE[:200]  # the 200-character prompt of the time-to-first-char figures

Goal = Literal["ratio>=", "ratio<=", "value>=", "value<="]


# ----- the raw yardstick -----------------------------------------------------------------------


def raw_anchor() -> Path | None:
    """The yardstick script: ``$GENBOT_BENCH_RAW_ANCHOR``, else ``../shared/anchors/raw_charrnn.py``."""
    configured = os.environ.get(RAW_ENV)
    path = Path(configured) if configured else REPO / DEFAULT_RAW
    path = path if path.is_absolute() else (REPO / path)
    return path.resolve() if path.is_file() else None


def raw_missing_note() -> str:
    """What to print when the yardstick is missing (ratios are skipped, genbot figures still run)."""
    return f"raw yardstick not found (set {RAW_ENV} or add {DEFAULT_RAW} next to the repo): ratios skipped"


def run_raw(args: Sequence[str], timeout: float = 3600.0, device: str = "cpu") -> dict[str, Any] | None:
    """Run the yardstick with ``args`` on ``device`` in a fresh process; its JSON object, or None on failure.

    The device is always passed: the yardstick picks CUDA when present, genbot serves on the CPU.
    """
    raw = raw_anchor()
    if raw is None:
        return None
    extra = [] if "--device" in args else ["--device", device]
    return run_json_child([sys.executable, str(raw), *args, *extra], timeout)


def run_json_child(cmd: Sequence[str], timeout: float = 3600.0, cwd: Path = REPO) -> dict[str, Any] | None:
    """Run ``cmd`` and parse the last JSON-object line of its stdout (None, with a message, on failure)."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    except subprocess.TimeoutExpired:
        print(f"  ! timed out after {timeout:.0f} s: {' '.join(cmd[:3])} …", file=sys.stderr)
        return None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            if proc.returncode == 0:
                return parsed
    tail = (proc.stderr or proc.stdout).strip()[-1500:]
    print(f"  ! child failed (exit {proc.returncode}): {' '.join(cmd[:4])} …\n{tail}", file=sys.stderr)
    return None


def arch_args(cell: str, layers: int, hidden: int, emb: int) -> list[str]:
    """The yardstick's model options for one architecture."""
    return ["--cell", cell, "--layers", str(layers), "--hidden", str(hidden), "--emb", str(emb)]


def shown(path: Path) -> str:
    """``path`` relative to the repo root when it is near it (results stay free of machine paths)."""
    try:
        rel = os.path.relpath(path, REPO)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith(os.path.join("..", "..")) else rel


def corpus_path(given: str | None) -> Path:
    """The corpus argument, else ``$GENBOT_BENCH_CORPUS``, else tiny-shakespeare next to the repo."""
    chosen = given or os.environ.get(CORPUS_ENV) or str(DEFAULT_CORPUS)
    path = Path(chosen)
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    if not path.is_file():
        raise SystemExit(f"corpus not found: {chosen} (pass a path or set {CORPUS_ENV})")
    return path.resolve()


# ----- models: the bundled one, or a random stand-in of the same shape ---------------------------


@dataclass
class BenchModel:
    """A model folder to benchmark and how it was obtained."""

    folder: Path
    name: str
    cell: str
    layers: int
    hidden: int
    embedding: int
    vocab_size: int
    fallback: bool  # True: random weights saved to a temp folder (speed does not depend on weights)
    note: str

    def label(self) -> str:
        """Short architecture label, e.g. ``LSTM 2x384 emb 64 vocab 65``."""
        return f"{self.cell.upper()} {self.layers}x{self.hidden} emb {self.embedding} vocab {self.vocab_size}"

    def raw_args(self) -> list[str]:
        """Yardstick options that build the same architecture."""
        return [*arch_args(self.cell, self.layers, self.hidden, self.embedding), "--vocab", str(self.vocab_size)]


def bench_model(folder: Path | None, name: str, default: dict[str, Any], workdir: Path) -> BenchModel:
    """Load ``folder`` if it holds a valid model; else save a random model of its (or the default) shape."""
    from genbot.errors import GenbotError
    from genbot.networks.checkpoint import load_model

    reason = "no folder given"
    if folder is not None:
        try:
            loaded = load_model(folder)
            shape = loaded.network.config.to_dict()
            return _described(folder, loaded.card.name, shape, False, f"bundled {shown(folder)}")
        except GenbotError as e:
            reason = f"{shown(folder)} not loadable ({e})"
    shape = _card_shape(folder) or default
    stand_in = save_random_model(workdir / name, name, shape)
    return _described(stand_in, name, shape, True, f"FALLBACK: random weights, same shape ({reason})")


def _described(folder: Path, name: str, shape: dict[str, Any], fallback: bool, note: str) -> BenchModel:
    return BenchModel(
        folder=folder,
        name=name,
        cell=str(shape["cell"]),
        layers=int(shape["layers"]),
        hidden=int(shape["hidden"]),
        embedding=int(shape["embedding"]),
        vocab_size=int(shape["vocab_size"]),
        fallback=fallback,
        note=note,
    )


def _card_shape(folder: Path | None) -> dict[str, Any] | None:
    """The architecture a folder's ``plugin.toml`` declares, if the card alone is readable."""
    if folder is None:
        return None
    from genbot.errors import GenbotError
    from genbot.networks.card import ModelCard

    try:
        return ModelCard.read(folder / "plugin.toml").architecture.model_dump()
    except GenbotError:
        return None


def save_random_model(folder: Path, name: str, shape: dict[str, Any]) -> Path:
    """Write a randomly initialised model folder of ``shape`` (seeded, so runs are repeatable)."""
    import torch

    from genbot.networks.card import ModelCard, Weights
    from genbot.networks.charrnn import CharRNN, CharRNNConfig
    from genbot.networks.checkpoint import architecture_of, save_model
    from genbot.networks.vocab import Vocab

    torch.manual_seed(0)
    config = CharRNNConfig(**{**shape, "dropout": 0.0})
    model = CharRNN(config).eval()
    card = ModelCard(
        name=name,
        description="random-initialised stand-in written by genbot's benchmarks",
        architecture=architecture_of(config),
        weights=Weights(sha256=""),
    )
    save_model(folder, model, Vocab(stand_in_chars(config.vocab_size)), card)
    return folder


def stand_in_chars(n: int) -> list[str]:
    """``n`` distinct characters, tiny-shakespeare's first, then other printable ones."""
    pool = list(SHAKESPEARE_CHARS) + [chr(c) for c in range(32, 127) if chr(c) not in SHAKESPEARE_CHARS]
    pool += [chr(0x100 + i) for i in range(max(0, n - len(pool)))]
    return pool[:n]


def bundled_folders(plugins_dir: Path) -> list[Path]:
    """Sub-folders of ``plugins_dir`` holding a ``plugin.toml`` (the bundled models)."""
    if not plugins_dir.is_dir():
        return []
    return sorted(d for d in plugins_dir.iterdir() if (d / "plugin.toml").is_file())


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for stand-in models, data folders and training output."""
    return tempfile.TemporaryDirectory(prefix=f"genbot-bench-{prefix}-")


# ----- figures and verdicts --------------------------------------------------------------------


@dataclass
class Row:
    """One line of a result table: genbot's figure, the yardstick's, and the goal they are held to."""

    what: str
    genbot: float | None
    raw: float | None = None
    unit: str = ""
    goal: Goal | None = None  # None: reported for information, no target
    target: float | None = None
    note: str = ""
    ratio: float | None = field(init=False, default=None)
    verdict: str = field(init=False, default="info")

    def __post_init__(self) -> None:
        if self.genbot is not None and self.raw:
            self.ratio = round(self.genbot / self.raw, 3)
        self.verdict = self._verdict()

    def _verdict(self) -> str:
        if self.goal is None or self.target is None:
            return "info"
        measured = self.ratio if self.goal.startswith("ratio") else self.genbot
        if measured is None:
            return "n/a"
        ok = measured >= self.target if self.goal.endswith(">=") else measured <= self.target
        return "PASS" if ok else "MISS"

    def target_text(self) -> str:
        """The target as a reader wants it, e.g. ``≥ 0.95x`` or ``≤ 5 ms``."""
        if self.goal is None or self.target is None:
            return "—"
        sign = "≥" if self.goal.endswith(">=") else "≤"
        if self.goal.startswith("ratio"):
            return f"{sign} {self.target:g}x"
        return f"{sign} {fmt(self.target)} {self.unit}".rstrip()


def fmt(value: float | None) -> str:
    """A figure with sensible precision (thousands separators for big ones)."""
    if value is None:
        return "—"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def median(values: Sequence[float]) -> float | None:
    """Median, or None for no values."""
    return float(statistics.median(values)) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return float(ordered[rank])


def peak_rss_mb() -> dict[str, float]:
    """This process's peak resident memory in MB: ``VmHWM`` (Linux) and ``getrusage`` max RSS.

    On Linux ``ru_maxrss`` survives ``exec``: a child started from a big parent reports the
    parent's peak when that is higher, so the figure held to a target is ``VmHWM`` (the peak of
    this process's own memory map); ``getrusage`` is reported beside it.
    """
    import resource

    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"getrusage_mb": round(raw / 2**20 if sys.platform == "darwin" else raw / 1024, 1)}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vmhwm_mb"] = round(int(line.split()[1]) / 1024, 1)
    out["rss_mb"] = out.get("vmhwm_mb", out["getrusage_mb"])
    return out


def environment(threads: int | None = None) -> dict[str, Any]:
    """Where the figures came from: torch, CPU count, load, git commit."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),  # the flags the serving paths' cache is keyed by
        "native_kernels": native_kernels(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "loadavg_1m": round(load[0], 2),
        "commit": _git_commit(),
    }


def native_kernels() -> str:
    """How genbot's native kernels run here (the vector widths they timed when loaded), or why they don't."""
    from genbot.networks import native

    lib = native.library()
    return lib.describe() if lib is not None else f"unavailable: {native.unavailable_reason()}"


def cpu_flags() -> list[str]:
    """The CPU's bf16/AMX/AVX flags that decide which numeric path is fast (Linux; else empty)."""
    from genbot.engine.paths import cpu_flags as flags

    return flags()


def paths_note(name: str, model: Any) -> str:
    """One line naming the serving paths a loaded model chose, and why."""
    paths = getattr(model, "serving_paths", None)
    if paths is None:
        return f"{name}: no serving paths (not a CharRNN)"
    p = paths
    return f"{name}: prime {p.prime} (rows {p.prime_rows}), step {p.step} (rows {p.step_rows}): {p.reason}"


def load_warning(threads: int) -> str | None:
    """A warning when other work already occupies the cores this run's threads need."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load + threads > cpus + 0.5:
        return (
            f"load average {load:.1f} on {cpus} CPUs: other work competes for the cores; with "
            f"{threads} torch thread(s) figures can be far off (OpenMP threads spin when oversubscribed)"
        )
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


# ----- output ----------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    """Rows as an aligned plain-text table."""
    header = ("what", "genbot", "raw", "ratio", "target", "")
    lines = [header] + [
        (
            r.what,
            f"{fmt(r.genbot)} {r.unit}".rstrip(),
            f"{fmt(r.raw)} {r.unit}".rstrip() if r.raw is not None else "—",
            f"{r.ratio:.2f}x" if r.ratio is not None else "—",
            r.target_text(),
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def markdown(rows: Sequence[Row]) -> str:
    """Rows as a markdown table (what, genbot, raw, ratio, target, result)."""
    out = ["| what | genbot | raw | ratio | target | result |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        raw = f"{fmt(r.raw)} {r.unit}".rstrip() if r.raw is not None else "—"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        genbot = f"{fmt(r.genbot)} {r.unit}".rstrip()
        out.append(f"| {r.what} | {genbot} | {raw} | {ratio} | {r.target_text()} | {r.verdict} |")
    return "\n".join(out)


def row_from_dict(data: dict[str, Any]) -> Row:
    """A Row back from its JSON form (``run_all`` reads the per-bench results)."""
    return Row(
        what=data["what"],
        genbot=data.get("genbot"),
        raw=data.get("raw"),
        unit=data.get("unit") or "",
        goal=data.get("goal"),
        target=data.get("target"),
        note=data.get("note") or "",
    )


def report(name: str, rows: Sequence[Row], payload: dict[str, Any], notes: Sequence[str] = ()) -> dict[str, Any]:
    """Print the table and notes, then one JSON line; write the JSON to ``bench/results/NAME.json``."""
    result = {"bench": name, **payload, "notes": list(notes), "rows": [asdict(r) for r in rows]}
    print()
    print(table(rows))
    for note in notes:
        print(f"note: {note}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, ensure_ascii=False)
    (RESULTS_DIR / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
    return result


def say(message: str) -> None:
    """Progress line on stderr (stdout stays table + JSON)."""
    print(message, file=sys.stderr, flush=True)

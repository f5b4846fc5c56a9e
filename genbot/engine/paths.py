"""Choose each served model's numeric paths by measuring them on the machine it runs on.

A path is how a model reads prompts (``prime``: float32, a bfloat16 copy, FBGEMM float16, oneDNN
float32) and how it steps streams (``step``: float32 ``addmm``, FBGEMM float16, oneDNN float32 or
oneDNN bfloat16).
Which is fastest depends on the CPU: bfloat16 matrix products are several times faster than
float32 where the CPU has bf16 instructions (AVX-512 BF16, AMX) and several times slower where it
has not; FBGEMM's float16 weights halve the bytes read on any x86-64 CPU; oneDNN's packed float32
product is batch-invariant from one row where MKL's is not, so exact mode needs no padding with
it; genbot's native kernels (``genbot.networks.native``) are candidates wherever a C compiler
built them and their numbers follow float32's. So nothing is assumed: at load, each candidate
is timed once for a few milliseconds (a lone stream and a batch), checked for batch invariance
(does a row's result depend on how many rows are in the batch?) fastest first, until the rest
are far slower than an exact one, and the exact ones are timed again, interleaved; the fastest
is kept.

* In exact mode (``[engine] batch_invariant = true``) only paths whose rows agree alone and in
  any batch are candidates; each path records how many rows a call needs for that: 1, or 2, 4
  or 8 where BLAS rounds smaller batches differently (its one-row kernel; on some CPUs the
  kernels for fewer than 4 rows), and the engine pads a smaller batch with copies of a row.
* A path other than float32 must beat it by ``MARGIN`` to be chosen: timings on a shared
  machine are noisy, and float32 is the reference.
* Choices are cached per process and in ``data_dir/engine-paths.json``, keyed by the CPU
  (capability, model name and the instruction-set flags that decide the paths), the torch
  version, the thread count and the model's shape.
* ``[engine] prime_path`` / ``step_path`` force a path (``auto`` measures).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
from torch import Tensor

from genbot.engine.memory import release_freed_memory
from genbot.networks import native
from genbot.networks.charrnn import (
    NATIVE,
    PRIME_PATHS,
    ROWWISE,
    STEP_PATHS,
    CharRNN,
    PrimePath,
    ServingPaths,
    StepPath,
    bf16_step_available,
    fp16_available,
    onednn_available,
    pad_rows,
)

log = logging.getLogger("genbot.engine")

CACHE_FILE = "engine-paths.json"
MARGIN = 0.9  # a non-float32 path must take at most this share of float32's time
# Prompt characters per timed read: a chat prompt's length, not a handful. At 16 characters a
# reader's fixed cost per call decides (FBGEMM float16 beat a bfloat16 copy there on an AMX CPU);
# at 200 the bfloat16 copy read twice as fast, and 200 is what a waiting user feels.
PROBE_CHARS = 64
PROBE_STEPS = 16  # steps per timed step run (8 swung by 2x between runs on a shared machine)
PROBE_BATCH = 8  # the batched half of every prompt-reader measurement
# ... and of every step measurement: a step kernel that runs rows one by one (rowwise) costs rows
# times a lone row, so a small batch would flatter it against a real batched kernel at 64 streams.
STEP_PROBE_BATCH = 32
REPEATS = 3  # interleaved timings per candidate; the minimum counts
# Batch sizes of the batch-invariance check: BLAS kernels block rows by 4, 6, 8 or 16, and a
# product can round one way for a block and another for its tail, so a few sizes are not enough.
# Up to the default 128 streams a model steps at once: oneDNN's bfloat16 product was seen to
# agree for every batch up to 32 rows and to round 33 or more rows another way.
_CHECK_BATCHES = (2, 3, 4, 5, 7, 8, 13, 16, 32, 33, 64, 65, 128)
_CHECK_ROWS = max(_CHECK_BATCHES)
# Paddings tried, fewest first: a path needing more than 8 rows is not worth padding to.
_ROW_CHOICES = (1, 2, 4, 8)
# Batch sizes timed for where fast mode's lone-stream kernel stops paying (``_few_rows``).
_FEW_ROWS = (2, 4, 8, 16)

Forced = Literal["auto", "fp32", "bf16", "fp16", "onednn", "steps", "rowwise", "rowwise_fp16", "native", "native_fp16"]
_CACHE_VERSION = 7  # bump when a choice cached by an older genbot may no longer be right
_process_cache: dict[str, ServingPaths] = {}
_lock = threading.Lock()


# Instruction sets that make a path fast or slow: two CPUs with one model name (a virtual
# machine's "AMD EPYC") and one torch capability can differ in these, bf16 above all.
PATH_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile", "f16c")


def _cpuinfo(field: str) -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> list[str]:
    """The CPU's flags among ``PATH_FLAGS`` (Linux; else empty)."""
    flags = (_cpuinfo("flags") or "").split()
    return [f for f in PATH_FLAGS if f in flags]


def cpu_id() -> str:
    """What the choice depends on: torch's CPU capability, the CPU model name and its path flags."""
    name = _cpuinfo("model name") or platform.processor()
    return f"{torch.backends.cpu.get_cpu_capability()} {name} [{' '.join(cpu_flags())}]".strip()


@dataclass(frozen=True)
class PathTuner:
    """Chooses (and caches) the serving paths of the models one registry loads."""

    prime: Forced = "auto"
    step: Forced = "auto"
    batch_invariant: bool = True
    cache_dir: Path | None = None  # data_dir; None: cache in this process only
    threads: int = 1  # torch threads the model's worker serves with: measured with exactly these
    cache_file: Path | None = None  # overrides cache_dir/engine-paths.json
    native: bool = True  # offer the native kernels (built here with the C compiler) as candidates

    def key(self, model: CharRNN) -> str:
        """Cache key: CPU, torch, threads, exactness, the native kernels' build and the model's shape."""
        c = model.config
        shape = f"{c.cell} {c.layers}x{c.hidden} emb {c.embedding} vocab {c.vocab_size}"
        device = model.head.weight.device.type
        return (
            f"v{_CACHE_VERSION} | {cpu_id()} | torch {torch.__version__} | {device} | threads {self.threads} | {shape}"
            f" | invariant {self.batch_invariant} | prime {self.prime} | step {self.step} | {self._native_id()}"
        )

    def _native_id(self) -> str:
        """Which native kernels serve (a new genbot's are measured anew), or that none do."""
        lib = native.library(self._native_dir()) if self.native else None
        return f"native {lib.path.stem.rsplit('-', 1)[-1]}" if lib is not None else "native off"

    def _native_dir(self) -> Path | None:
        file = self._file()
        return file.parent / "native" if file is not None else None

    def choose(self, model: CharRNN) -> ServingPaths:
        """The model's paths: cached for this key, else measured (and cached)."""
        key = self.key(model)
        with _lock:
            cached = _process_cache.get(key) or self._from_disk(key)
            if cached is None:
                before = torch.get_num_threads()
                torch.set_num_threads(self.threads)  # a 2-thread timing says nothing about a 1-thread worker
                try:
                    cached = measure(model, self.prime, self.step, self.batch_invariant, self.native)
                finally:
                    torch.set_num_threads(before)
                    release_freed_memory()  # the candidates' weights, built and dropped
                self._to_disk(key, cached)
            _process_cache[key] = cached
        return cached

    def _file(self) -> Path | None:
        if self.cache_file is not None:
            return self.cache_file
        return self.cache_dir / CACHE_FILE if self.cache_dir is not None else None

    def _from_disk(self, key: str) -> ServingPaths | None:
        path = self._file()
        if path is None or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8")).get(key)
            if record is None:
                return None
            paths = ServingPaths(**record)
        except (OSError, ValueError, TypeError) as e:
            log.warning("ignoring unreadable %s: %s", path.name, e)
            return None
        primes, steps = {paths.prime, paths.prime_lone or paths.prime}, {paths.step, paths.step_few or paths.step}
        if not primes <= set(PRIME_PATHS) or not steps <= set(STEP_PATHS):
            return None
        return ServingPaths(**{**paths.to_dict(), "reason": f"{paths.reason} (cached)"})  # type: ignore[arg-type]

    def _to_disk(self, key: str, paths: ServingPaths) -> None:
        path = self._file()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            data = data if isinstance(data, dict) else {}
            data[key] = paths.to_dict()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(path)
        except (OSError, ValueError) as e:
            log.warning("could not write %s: %s", path.name, e)


NativePath = Literal["native", "native_fp16"]


def native_candidates(model: CharRNN) -> list[NativePath]:
    """The native kernels' paths this model can use here: none where no compiler built them, and
    only those that compute what the float32 module computes (a compiler's or CPU's quirk loses
    its path here, logged, instead of serving wrong text)."""
    lib = native.library() if model.head.weight.device.type == "cpu" else None
    if lib is None:
        return []
    kinds: list[NativePath] = ["native", "native_fp16"]
    return [p for p in kinds if NATIVE[p] in lib.weight_types() and _follows_fp32(model, p)]


# How far a native path's logits may stray from the float32 module's, relative to 1 + |logit|:
# float32 weights only sum in another order (~6e-6 on the bundled models after 200 characters);
# float16 weights are each rounded to 11 significant bits (~2e-3 there).
_NATIVE_TOLERANCE = {"native": 1e-4, "native_fp16": 1e-2}


def _follows_fp32(model: CharRNN, path: str) -> bool:
    """Whether ``path`` reads a prompt and steps on as the float32 module does, within tolerance."""
    before = model.serving_paths
    ids = _probe_ids(model, 3, 17, seed=5)
    try:
        with torch.inference_mode():
            full, _ = model(ids)
            model.use_paths(keep_caches=True, paths=_paths(model, prime=path, step=path, rows=1))
            logits, state = model.prime(ids[:, :-1])
            stepped, _ = model.step(ids[:, -1], state)
        tol = _NATIVE_TOLERANCE[path]
        got, want = torch.stack([logits, stepped], 1), full[:, -2:]
        ok = bool(((got - want).abs() <= tol * (1 + want.abs())).all())
    except RuntimeError as e:
        log.warning("native path %s failed on %s: %s", path, cpu_id(), e)
        return False
    finally:
        model.use_paths(before, keep_caches=True)
    if not ok:
        log.warning("native path %s disagrees with float32 on %s: not a candidate", path, cpu_id())
    return ok


def prime_candidates(model: CharRNN, natives: Sequence[NativePath] | None = None) -> list[PrimePath]:
    """Prompt readers this model can use here (``natives``: ``native_candidates``, if already known)."""
    out: list[PrimePath] = ["fp32", "bf16"]
    cpu = model.head.weight.device.type == "cpu"
    if cpu and model.config.cell != "rnn" and fp16_available():
        out.append("fp16")
    if cpu and onednn_available():
        out.append("onednn")
    return [*out, "steps", *(native_candidates(model) if natives is None else natives)]


def step_candidates(model: CharRNN, natives: Sequence[NativePath] | None = None) -> list[StepPath]:
    """Step kernels this model can use here (``natives``: ``native_candidates``, if already known)."""
    cpu = model.head.weight.device.type == "cpu"
    fp16: list[StepPath] = ["fp16"] if cpu and fp16_available() else []
    onednn: list[StepPath] = ["onednn"] if cpu and onednn_available() else []
    # oneDNN runs bfloat16 everywhere it has the op, emulated where the CPU lacks bf16
    # instructions: the quick timing in ``_pick`` drops it there.
    bf16: list[StepPath] = ["bf16"] if cpu and bf16_step_available() else []
    rowwise_fp16: list[StepPath] = ["rowwise_fp16"] if fp16 else []
    native_paths = native_candidates(model) if natives is None else natives
    return ["fp32", *fp16, *onednn, *bf16, "rowwise", *rowwise_fp16, *native_paths]


def measure(
    model: CharRNN,
    prime: Forced = "auto",
    step: Forced = "auto",
    batch_invariant: bool = True,
    with_native: bool = True,
) -> ServingPaths:
    """Time and check every candidate path of ``model``; the fastest acceptable ones."""
    before = model.serving_paths
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            natives = native_candidates(model) if with_native else []  # checked against float32 once
            step_path, step_rows, step_why, step_ms = _pick(
                "step", step_candidates(model, natives), step, batch_invariant,
                lambda p: _step_rows(model, p), lambda p, b, r: _time_step(model, p, b, r), STEP_PROBE_BATCH,
            )  # fmt: skip
            # the steps reader runs the chosen step kernel, so prompts are checked and timed with it
            prime_path, prime_rows, prime_why, prime_ms = _pick(
                "prime", prime_candidates(model, natives), prime, batch_invariant,
                lambda p: _prime_rows(model, p, step_path), lambda p, b, r: _time_read(model, p, b, r, step_path),
            )  # fmt: skip
            few, few_below = (None, 0) if batch_invariant or step != "auto" else _few_rows(model, step_path, step_ms)
    finally:
        model.use_paths(before)
    lone = None if batch_invariant or prime != "auto" else _lone_reader(prime_path, prime_ms)
    took = (time.perf_counter() - t0) * 1000
    few_why = f"; step {few} below {few_below} rows (fastest alone)" if few else ""
    few_why += f"; prime {lone} for a lone prompt (fastest alone)" if lone else ""
    lib = native.library() if {prime_path, step_path, lone} & set(NATIVE) else None
    native_why = f"; native kernels: {lib.describe()}" if lib is not None else ""
    reason = (
        f"{prime_why}; {step_why}{few_why}{native_why}; "
        f"measured in {took:.0f} ms on {torch.backends.cpu.get_cpu_capability()}"
    )
    measured = {f"prime_{k}": v for k, v in prime_ms.items()} | {f"step_{k}": v for k, v in step_ms.items()}
    prime_as, step_as = cast(PrimePath, prime_path), cast(StepPath, step_path)
    return ServingPaths(prime_as, step_as, prime_rows, step_rows, reason, measured, few, few_below, lone)


def _lone_reader(batched: str, prime_ms: dict[str, float]) -> PrimePath | None:
    """Fast mode: the prompt reader fastest for a lone prompt where it is not ``batched`` (by
    ``MARGIN``), else None. Exact mode never mixes readers: a prompt's state would depend on how
    many were read with it."""
    lone = {p: ms for p, ms in prime_ms.items() if p in PRIME_PATHS}
    if batched not in lone:
        return None
    best = min(lone, key=lambda p: lone[p])
    return cast(PrimePath, best) if best != batched and lone[best] <= MARGIN * lone[batched] else None


def _few_rows(model: CharRNN, batched: str, step_ms: dict[str, float]) -> tuple[StepPath | None, int]:
    """Fast mode: the kernel fastest for a lone stream where it is not ``batched``, and the row
    count from which ``batched`` is as fast (timed at 2, 4, 8 and 16 rows); else (None, 0).

    Exact mode never mixes kernels: a row's result would depend on how many rows share its step.
    """
    lone = {p: ms for p, ms in step_ms.items() if p in STEP_PATHS and p not in ROWWISE}
    if not lone or batched not in lone:
        return None, 0
    best = min(lone, key=lambda p: lone[p])
    if best == batched or lone[best] > MARGIN * lone[batched]:
        return None, 0
    for rows in _FEW_ROWS:
        few = min(_time_step(model, best, rows, rows) for _ in range(REPEATS))
        many = min(_time_step(model, batched, rows, rows) for _ in range(REPEATS))
        if many <= few:
            return cast(StepPath, best), rows
    return cast(StepPath, best), STEP_PROBE_BATCH


def _pick(
    what: str,
    candidates: Sequence[str],
    forced: Forced,
    batch_invariant: bool,
    rows_of: Callable[[str], int],
    time_of: Callable[[str, int, int], float],
    batch: int = PROBE_BATCH,
) -> tuple[str, int, str, dict[str, float]]:
    """(path, rows, why, timings) for one of prime/step."""
    if not batch_invariant:  # fast mode: no row has to agree with another, so none is padded
        rows_of = lambda p: 1  # noqa: E731
    if forced != "auto":
        if forced not in candidates:
            log.warning("[engine] %s_path = %r is not available here; using fp32", what, forced)
            return "fp32", max(1, rows_of("fp32")), f"{what} fp32 ({forced} forced but unavailable)", {}
        forced_rows = rows_of(forced)
        note = "" if forced_rows else ", not batch-invariant"
        return forced, max(1, forced_rows), f"{what} {forced} (forced{note})", {}
    quick = _quick_timings(candidates, time_of, batch)
    rows, slow, first_exact = _check_fastest_first(candidates, quick, rows_of, batch_invariant)
    contenders = list(rows)
    usable = [p for p in contenders if rows[p] or not batch_invariant]
    if not usable:  # nothing is exact here: serve the reference and say so
        log.warning("no %s path is batch-invariant on %s; using fp32", what, cpu_id())
        return "fp32", 1, f"{what} fp32 (none of {', '.join(contenders)} is batch-invariant here)", {}
    timings: dict[str, list[float]] = {p: [] for p in usable}
    for _ in range(REPEATS):  # interleaved, so a burst of other work hits every candidate alike
        for p in usable:
            for b in (1, batch):
                timings[p].append(time_of(p, b, max(1, rows[p]) if batch_invariant else 1))
    # score: the product of the lone and batched times (each the minimum of its repeats)
    score = {p: min(t[0::2]) * min(t[1::2]) for p, t in timings.items()}
    best = min(usable, key=lambda p: score[p] / (1.0 if p == "fp32" else MARGIN**2))
    timed = {p: (min(t[0::2]), min(t[1::2])) for p, t in timings.items()} | {
        p: t for p, t in quick.items() if p not in timings
    }  # the others by their one quick timing
    ms = {p: round(t[0] * 1000, 3) for p, t in timed.items()} | {
        f"{p}_x{batch}": round(t[1] * 1000, 3) for p, t in timed.items() if math.isfinite(t[1])
    }
    why = f"{what} {best}: fastest of {', '.join(usable)}"
    varying = [p for p in contenders if p not in usable]
    if varying:
        why += f" ({', '.join(varying)} not batch-invariant here)"
    if slow:
        why += f" ({', '.join(slow)} far slower than {first_exact} here: not checked)"
    return best, max(1, rows[best]), why, ms


# A candidate whose quick lone x batched time is this many times the fastest exact one's is not
# worth checking (it reads dozens of prompts): bfloat16 emulated without bf16 instructions, a
# row-by-row kernel beside a batched one.
FAR_SLOWER = 4.0
# ... and one whose lone time alone is this many times the fastest lone time is not worth the
# batched quick timing either (bfloat16 emulated: 1.5 s for 8 prompts of 64 characters).
FAR_SLOWER_ALONE = 8.0


def _quick_timings(
    candidates: Sequence[str], time_of: Callable[[str, int, int], float], batch: int
) -> dict[str, tuple[float, float]]:
    """One (lone, batched) timing per candidate, unpadded; batched inf where lone is far slower."""
    lone = {p: time_of(p, 1, 1) for p in candidates}
    fastest = min(lone.values())
    return {p: (t, time_of(p, batch, 1) if t <= FAR_SLOWER_ALONE * fastest else math.inf) for p, t in lone.items()}


def _check_fastest_first(
    candidates: Sequence[str],
    quick: dict[str, tuple[float, float]],
    rows_of: Callable[[str], int],
    batch_invariant: bool,
) -> tuple[dict[str, int], list[str], str | None]:
    """Batch-invariance checks in order of the quick timings, fastest first, until the rest are far
    slower than an exact one: (rows of each checked candidate, those left unchecked, that exact one).

    Done before the precise timings: the check reads dozens of prompts per candidate, and a path
    that could not win anyway is not worth it.
    """
    order = sorted(candidates, key=lambda p: quick[p][0] * quick[p][1])
    rows: dict[str, int] = {}
    slow: list[str] = []
    exact: str | None = None
    for p in order:
        if exact is not None and quick[p][0] * quick[p][1] > FAR_SLOWER * quick[exact][0] * quick[exact][1]:
            slow.append(p)
            continue
        rows[p] = rows_of(p)
        if exact is None and (rows[p] or not batch_invariant):
            exact = p
    return rows, slow, exact


def _paths(model: CharRNN, prime: str = "fp32", step: str = "fp32", rows: int = 2) -> ServingPaths:
    return ServingPaths(prime=prime, step=step, prime_rows=rows, step_rows=rows)  # type: ignore[arg-type]


def _probe_ids(model: CharRNN, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(model.config.vocab_size, (batch, length), generator=gen).to(model.head.weight.device)


def _prime_rows(model: CharRNN, path: str, step: str = "fp32") -> int:
    """The fewest rows (of 1, 2, 4, 8) from which a prompt read equals it in any batch, in chunks; else 0."""
    ids = _probe_ids(model, _CHECK_ROWS, 8)  # read as chunks of 4, 1 and 3 characters
    for rows in _ROW_CHOICES:
        try:
            model.use_paths(keep_caches=True, paths=_paths(model, prime=path, step=step, rows=rows))
            alone = _Lazy(lambda i: model.prime(ids[i : i + 1]))
            if all(_prime_batch_agrees(model, ids[:b], alone) for b in _CHECK_BATCHES):
                return rows
        except RuntimeError as e:
            log.warning("prime path %s failed its check: %s", path, e)
            return 0
    return 0


def _prime_batch_agrees(model: CharRNN, ids: Tensor, alone: _Lazy) -> bool:
    _, state = model.read(ids[:, :4], model.initial_state(ids.shape[0]))
    _, state = model.read(ids[:, 4:5], state)  # a one-character chunk too
    logits, state = model.read_end(*model.read(ids[:, 5:], state))
    return all(_same(alone[i], logits, state, i) for i in range(ids.shape[0]))


def _step_rows(model: CharRNN, path: str) -> int:
    """The fewest rows (of 1, 2, 4, 8) from which a stepped row equals itself in any batch; else 0."""
    gen = torch.Generator().manual_seed(1)
    state = tuple(
        torch.randn(s.shape, generator=gen).to(s) * 0.5 for s in model.initial_state(_CHECK_ROWS)
    )  # fmt: skip
    ids = _probe_ids(model, 1, _CHECK_ROWS)[0]
    for rows in _ROW_CHOICES:
        try:
            model.use_paths(keep_caches=True, paths=_paths(model, step=path, rows=rows))

            def padded(first: int, b: int, rows: int = rows) -> tuple[Tensor, tuple[Tensor, ...]]:
                # As the engine runs b rows: padded with copies of the first up to ``rows``.
                chosen = slice(first, first + b)
                return model.step(pad_rows(ids[chosen], rows), tuple(pad_rows(s[:, chosen], rows, 1) for s in state))

            lone = _Lazy(lambda i: padded(i, 1))
            batches = ((b, padded(0, b)) for b in _CHECK_BATCHES)
            if all(all(_same(lone[i], *out, i) for i in range(b)) for b, out in batches):
                return rows
        except RuntimeError as e:
            log.warning("step path %s failed its check: %s", path, e)
            return 0
    return 0


class _Lazy:
    """Results of a row read or stepped alone, computed when first compared: a path that fails
    the check on a small batch costs a few rows, not all of them."""

    def __init__(self, run: Callable[[int], tuple[Tensor, tuple[Tensor, ...]]]) -> None:
        self.run = run
        self.done: dict[int, tuple[Tensor, tuple[Tensor, ...]]] = {}

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        if i not in self.done:
            self.done[i] = self.run(i)
        return self.done[i]


def _same(
    alone: tuple[torch.Tensor, tuple[torch.Tensor, ...]], logits: torch.Tensor, state: tuple[torch.Tensor, ...], i: int
) -> bool:
    a_logits, a_state = alone
    return torch.equal(a_logits[:1], logits[i : i + 1]) and all(
        torch.equal(a[:, :1], b[:, i : i + 1]) for a, b in zip(a_state, state, strict=True)
    )


def _time_read(model: CharRNN, path: str, batch: int, rows: int, step: str = "fp32") -> float:
    model.use_paths(keep_caches=True, paths=_paths(model, prime=path, step=step, rows=rows))
    ids = _probe_ids(model, batch, PROBE_CHARS)
    zero = model.initial_state(batch)
    model.read(ids[:, :2], zero)  # first call builds the path's weights
    t0 = time.perf_counter()
    model.read_end(*model.read(ids, zero))
    return time.perf_counter() - t0


def _time_step(model: CharRNN, path: str, batch: int, rows: int) -> float:
    model.use_paths(keep_caches=True, paths=_paths(model, step=path))
    ids = _probe_ids(model, 1, max(batch, rows))[0]  # a lone row runs padded to the rows it needs
    state = model.initial_state(max(batch, rows))
    model.step(ids, state)  # first call builds the path's weights
    t0 = time.perf_counter()
    for _ in range(PROBE_STEPS):
        _, state = model.step(ids, state)
    return time.perf_counter() - t0

"""Native char-RNN kernels (``charrnn.c``): built with the machine's C compiler, called through ctypes.

A served character costs a CharRNN a few small matrix products and a few dozen element-wise
operations; from Python each is a separate dispatch of a few microseconds. ``charrnn.c`` runs a
whole step of every layer, a prompt chunk, or a run of steps with their sampling, in one call,
with products whose rows never depend on each other (batch-invariant by construction).

It is optional: the source ships with genbot and is compiled on first use with the C compiler
found here (``$CC``, else ``cc``, ``gcc`` or ``clang``) for this very CPU (``-march=native``), then
cached under the build folder, keyed by the source, the compiler and the CPU's flags. Where no
compiler works, ``library()`` is None and the serving paths that need it are not candidates;
where it works, ``genbot.engine.paths`` still only picks it if it measures faster. Where the
build targets AVX-512, loading it also times its products on 256-bit and on 512-bit vectors
(``NativeLibrary.calibrate``: the same numbers either way) and keeps the faster of each.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from genbot.networks.kernels import ServingWeights

log = logging.getLogger("genbot.native")

SOURCE = "charrnn.c"
COMPILE_TIMEOUT_S = 120
# Tried in order: this CPU's instructions (x86-64, or arm64 compilers that spell it -mcpu), then plain.
_ARCH_FLAGS: tuple[list[str], ...] = (["-march=native"], ["-mcpu=native"], [])
_BASE_FLAGS = ["-O3", "-shared", "-fPIC", "-ffp-contract=fast", "-fno-strict-aliasing"]

WeightType = Literal["fp32", "fp16"]
WEIGHT_TYPES = {"fp32": 0, "fp16": 1}
CELLS = {"rnn": 0, "lstm": 1, "gru": 2}
_ERRORS = {1: "out of memory", 2: "bad arguments (a character id outside the vocabulary?)"}

_lock = threading.Lock()
_library: NativeLibrary | None = None
_failed: str | None = None  # why the build failed, once it has


class _Net(ctypes.Structure):
    """``net_t`` of charrnn.c."""

    _fields_ = [
        ("cell", ctypes.c_int32),
        ("layers", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("vocab", ctypes.c_int32),
        ("gates", ctypes.c_int32),
        ("wtype", ctypes.c_int32),
        ("table", ctypes.c_void_p),
        ("w_ih", ctypes.POINTER(ctypes.c_void_p)),
        ("w_hh", ctypes.POINTER(ctypes.c_void_p)),
        ("b_in", ctypes.POINTER(ctypes.c_void_p)),
        ("b_hh", ctypes.POINTER(ctypes.c_void_p)),
        ("head_w", ctypes.c_void_p),
        ("head_b", ctypes.c_void_p),
    ]


WIDE_BLOCKS, WIDE_LONE = 1, 2  # charrnn.c's wide modes: batched rows, lone rows on 512-bit vectors


class NativeLibrary:
    """The loaded kernels: their panel width, whether float16 weights are supported, and which
    products run on 512-bit vectors here (timed when loaded: ``calibrate``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))  # CDLL releases the GIL for the length of every call
        p, i, net = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Net)
        for name, args in {
            "gb_step": [net, i, p, p, p, p],
            "gb_read": [net, i, i, p, p, p],
            "gb_head": [net, i, p, p],
            "gb_decode": [net, i, i, p, p, p, p, p, p, p, p, p],
            "gb_set_wide": [i],
            "gb_calibrate": [ctypes.POINTER(ctypes.c_double)],
        }.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        self.lib = lib
        self.panel = int(lib.gb_panel())
        self.has_fp16 = bool(lib.gb_has_f16())
        self.has_wide = bool(lib.gb_has_wide())
        self.wide_mode = 0
        self.calibration: tuple[float, ...] = ()
        self.calibrate()

    def calibrate(self) -> int:
        """Time products narrow and wide on this CPU and keep the faster of each (the numbers are
        the same either way); the wide mode set."""
        seconds = (ctypes.c_double * 4)()
        self.wide_mode = int(self.lib.gb_calibrate(seconds))
        self.calibration = tuple(seconds)
        return self.wide_mode

    def set_wide(self, mode: int) -> int:
        """Force a wide mode (``WIDE_BLOCKS | WIDE_LONE``, where the build has wide vectors); the mode set."""
        self.wide_mode = int(self.lib.gb_set_wide(mode))
        return self.wide_mode

    def describe(self) -> str:
        """Which vectors the products use here, and the timings that chose them."""
        if not self.has_wide:
            return "8-lane (256-bit) products: no 512-bit build here"
        us = [f"{t * 1e6:.0f}" for t in self.calibration]

        def width(bit: int) -> str:
            return "512" if self.wide_mode & bit else "256"

        return (
            f"{width(WIDE_BLOCKS)}-bit batches (256/512: {us[0]}/{us[1]} µs), "
            f"{width(WIDE_LONE)}-bit lone rows ({us[2]}/{us[3]} µs)"
        )

    def weight_types(self) -> list[WeightType]:
        """Weight types these kernels run here."""
        return ["fp32", "fp16"] if self.has_fp16 else ["fp32"]


def library(build_dir: Path | None = None) -> NativeLibrary | None:
    """The kernels, built (or found built) in ``build_dir`` on first use; None where they cannot be.

    Process-wide: the first successful build is kept. ``build_dir`` None builds in this user's
    folder under the system's temporary folder.
    """
    global _library, _failed
    with _lock:
        if _library is not None or _failed is not None:
            return _library
        try:
            _library = NativeLibrary(_build(build_dir))
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _failed = str(e)
            log.info("native char-RNN kernels unavailable: %s", e)
        return _library


def unavailable_reason() -> str | None:
    """Why ``library()`` gave None (None while it has not been tried or worked)."""
    return _failed


def _compiler() -> list[str]:
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if not candidate:
            continue
        words = shlex.split(candidate)
        if words and shutil.which(words[0]):
            return words
    raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(build_dir: Path | None) -> Path:
    """The shared library for this source, compiler and CPU: cached, else compiled now."""
    source = resources.files(__package__).joinpath(SOURCE).read_bytes()
    cc = _compiler()
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(b"\0".join([source, version.encode(), _cpu_flags().encode(), platform.machine().encode()]))
    name = f"genbot-charrnn-{key.hexdigest()[:16]}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    folder = build_dir if build_dir is not None else _default_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / name
    if target.is_file():
        return target
    errors = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        out = Path(tmp) / name
        for arch in _ARCH_FLAGS:
            cmd = [*cc, *_BASE_FLAGS, *arch, "-o", str(out), str(src), "-lm"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
            if done.returncode == 0:
                os.replace(out, target)  # atomic: another process building the same file is harmless
                log.info("built native char-RNN kernels: %s", target)
                return target
            errors.append(done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"])
    raise RuntimeError(f"{cc[0]} could not build {SOURCE}: {errors[-1][0]}")


def _default_dir() -> Path:
    """This user's folder under the system's temporary folder, shared by its processes.

    Only if it is a real folder of this user's that nobody else can write (a library loaded from
    a folder another user controls would run their code); else a new private one.
    """
    uid = getattr(os, "getuid", lambda: 0)()
    folder = Path(tempfile.gettempdir()) / f"genbot-native-{uid}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077:
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="genbot-native-"))


@dataclass(frozen=True)
class NativeSampling:
    """Per-row sampling settings as the kernels take them (from ``BatchSampler``)."""

    temps: Tensor  # (B,) float32; 1.0 on greedy rows
    top_k: Tensor  # (B,) int64; >= vocab: off
    top_p: Tensor  # (B,) float32; inf: off
    greedy: Tensor  # (B,) uint8


@dataclass(frozen=True)
class PackedNet:
    """A network's weights in the layout charrnn.c reads (``net_t``); None where it takes NULL."""

    cell: str
    wtype: WeightType
    table: Tensor  # (vocab, gates) float32: layer 0's input product and biases per character
    w_ih: list[Tensor | None]  # per layer, packed (layer 0: None, the table stands for it)
    w_hh: list[Tensor]  # per layer, packed
    b_in: list[Tensor | None]  # per layer, padded: the input bias, plus the hidden bias but for GRU
    b_hh: list[Tensor | None]  # per layer, padded: GRU's hidden bias; None for the other cells
    head_w: Tensor  # packed
    head_b: Tensor  # padded

    def buffers(self) -> list[Tensor | None]:
        """Every buffer in ``net_t``'s order: the table, each layer's four, then the head's two."""
        per_layer = [t for i in range(len(self.w_hh)) for t in (self.w_ih[i], self.w_hh[i], self.b_in[i], self.b_hh[i])]
        return [self.table, *per_layer, self.head_w, self.head_b]


def pack(weights: ServingWeights, panel: int, wtype: WeightType) -> PackedNet:
    """``weights`` packed for kernels of this panel width, with weight matrices in ``wtype``."""
    gru, dtype = weights.cell == "gru", torch.float32 if wtype == "fp32" else torch.float16
    w_ih: list[Tensor | None] = []
    w_hh: list[Tensor] = []
    b_in: list[Tensor | None] = []
    b_hh: list[Tensor | None] = []
    with torch.no_grad():
        for i, lw in enumerate(weights.layers):
            wi, wh, bi, bh = (t.detach().float() for t in (lw.w_ih, lw.w_hh, lw.b_ih, lw.b_hh))
            w_ih.append(_pack(wi, panel, dtype) if i else None)
            w_hh.append(_pack(wh, panel, dtype))
            b_in.append(_pad(bi if gru else bi + bh, panel))
            b_hh.append(_pad(bh, panel) if gru else None)
        return PackedNet(
            weights.cell, wtype, weights.table.detach().float().contiguous(), w_ih, w_hh, b_in, b_hh,
            _pack(weights.head[0].detach().float(), panel, dtype), _pad(weights.head[1].detach().float(), panel),
        )  # fmt: skip


class NativeWeights:
    """A CharRNN's weights packed for the kernels in one weight type; calls keep them alive."""

    def __init__(self, lib: NativeLibrary, weights: ServingWeights, wtype: WeightType, key: object = None) -> None:
        """Layer 0's input product is ``weights.table`` (its W_ih is not read)."""
        if wtype == "fp16" and not lib.has_fp16:
            raise RuntimeError("these native kernels have no float16 weights on this compiler")
        self.lib, self.key, self.wtype = lib, key, wtype
        self.layers, self.hidden = len(weights.layers), weights.layers[0].w_hh.shape[1]
        self.vocab = weights.head[0].shape[0]
        self.lstm = weights.cell == "lstm"
        self.packed = packed = pack(weights, lib.panel, wtype)
        keep: list[object] = []  # everything the C side points at

        def pointers(tensors: Sequence[Tensor | None]) -> ctypes.Array[ctypes.c_void_p]:
            arr = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() if t is not None else None for t in tensors])
            keep.append(arr)
            return arr

        self.net = _Net(
            CELLS[packed.cell], self.layers, self.hidden, self.vocab, packed.table.shape[1], WEIGHT_TYPES[wtype],
            packed.table.data_ptr(), pointers(packed.w_ih), pointers(packed.w_hh), pointers(packed.b_in),
            pointers(packed.b_hh), packed.head_w.data_ptr(), packed.head_b.data_ptr(),
        )  # fmt: skip
        self._keep = keep

    def _state(self, state: Sequence[Tensor], rows: int) -> tuple[Tensor, ...]:
        """Fresh float32 copies of the state for ``rows`` rows: the kernels update them in place.

        Shapes are checked here: the C side trusts them, and a mismatch would read past a buffer.
        """
        shape, count = (self.layers, rows, self.hidden), 2 if self.lstm else 1
        if len(state) != count or any(tuple(s.shape) != shape for s in state):
            got = [tuple(s.shape) for s in state]
            raise ValueError(f"state must be {count} tensor(s) shaped {shape}, not {got}")
        return tuple(s.to(torch.float32, copy=True).contiguous() for s in state)

    def _ptrs(self, state: tuple[Tensor, ...]) -> tuple[int, int | None]:
        return state[0].data_ptr(), state[1].data_ptr() if self.lstm else None

    def _check(self, rc: int) -> None:
        if rc:
            raise RuntimeError(f"native char-RNN kernel failed: {_ERRORS.get(rc, f'error {rc}')}")

    def step(self, ids: Tensor, state: Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Logits (B, V) for one character per row ids (B,), and the next state."""
        ids = ids.to(torch.int64).contiguous()
        new = self._state(state, ids.shape[0])
        logits = torch.empty(ids.shape[0], self.vocab)
        self._check(self.lib.lib.gb_step(self.net, ids.shape[0], ids.data_ptr(), *self._ptrs(new), logits.data_ptr()))
        return logits, new

    def read(self, ids: Tensor, state: Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Prompt chunks ids (B, T) from ``state``: the top layer's last output (B, H) and the new state."""
        ids = ids.to(torch.int64).contiguous()
        new = self._state(state, ids.shape[0])
        self._check(self.lib.lib.gb_read(self.net, ids.shape[0], ids.shape[1], ids.data_ptr(), *self._ptrs(new)))
        return new[0][-1], new

    def head(self, top: Tensor) -> Tensor:
        """Logits (B, V) of the top layer's outputs (B, H)."""
        top = top.to(torch.float32).contiguous()
        if top.dim() != 2 or top.shape[1] != self.hidden:
            raise ValueError(f"top-layer outputs must be (rows, {self.hidden}), not {tuple(top.shape)}")
        logits = torch.empty(top.shape[0], self.vocab)
        self._check(self.lib.lib.gb_head(self.net, top.shape[0], top.data_ptr(), logits.data_ptr()))
        return logits

    def decode(
        self, ids: Tensor, state: Sequence[Tensor], sampling: NativeSampling, uniforms: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Sampled ids (B, S) for S = uniforms.shape[1] steps from inputs ids (B,), and the state after them."""
        ids = ids.to(torch.int64).contiguous()
        uniforms = uniforms.to(torch.float32).contiguous()
        batch, steps = uniforms.shape
        new = self._state(state, batch)
        per_row = (
            sampling.temps.to(torch.float32).contiguous(),
            sampling.top_k.to(torch.int64).contiguous(),
            sampling.top_p.to(torch.float32).contiguous(),
            sampling.greedy.to(torch.uint8).contiguous(),
        )
        if ids.shape != (batch,) or any(t.shape != (batch,) for t in per_row):
            raise ValueError(f"decode needs {batch} ids and {batch} rows of sampling settings")
        out = torch.empty(batch, steps, dtype=torch.int64)
        rows = tuple(t.data_ptr() for t in per_row)
        h, c = self._ptrs(new)
        rc = self.lib.lib.gb_decode(
            self.net, batch, steps, ids.data_ptr(), h, c, *rows, uniforms.data_ptr(), out.data_ptr()
        )
        self._check(rc)
        return out, new


def _pack(w: Tensor, panel: int, dtype: torch.dtype) -> Tensor:
    """W (out N, in K) as the kernels read it: ceil(N / panel) panels of (K, panel), zero-padded."""
    n, k = w.shape
    padded = -(-n // panel) * panel
    wt = torch.zeros(k, padded)
    wt[:, :n] = w.t()
    return wt.view(k, padded // panel, panel).permute(1, 0, 2).contiguous().to(dtype)


def _pad(b: Tensor, panel: int) -> Tensor:
    n = b.shape[0]
    out = torch.zeros(-(-n // panel) * panel)
    out[:n] = b
    return out

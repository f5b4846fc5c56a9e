"""The native kernels compute the same on CPUs other than this one.

genbot compiles ``charrnn.c`` on the machine that serves, for that machine's CPU. These tests build
it for other targets: x86-64 without AVX, FMA or F16C (the plain build genbot falls back to),
AVX2 and AVX-512 x86-64 (where this CPU runs them), and arm64 (under qemu's user-mode emulator),
each inside a small program (``native_driver.c``) that reads, steps and decodes on inputs from a
file, on 512-bit vectors wherever the build has them. Every target must follow torch's float32
modules, and decode what this machine's own build decodes from the same uniforms.

The arm64 target needs Debian's gcc-aarch64-linux-gnu and qemu-user (CI installs them); where they
are missing it skips and says so.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
import torch
from torch import Tensor

from genbot.engine.sampling import BatchSampler, SamplingParams
from genbot.networks import native
from genbot.networks.charrnn import CharRNN, CharRNNConfig

DRIVER = Path(__file__).with_name("native_driver.c")
NO_FLOAT16 = 3  # the driver's exit code where its build has no float16 weights
B, T, S, VOCAB = 5, 14, 20, 40


@dataclass(frozen=True)
class Target:
    name: str
    compiler: str
    flags: tuple[str, ...]
    runner: tuple[str, ...]  # an emulator to run the program under, or nothing
    has_fp16: bool

    needs: tuple[str, ...] = ()  # CPU flags the host needs to run it without an emulator


TARGETS = [
    Target("x86-64 plain", "gcc", ("-march=x86-64",), (), has_fp16=False),
    Target("x86-64-v3 AVX2", "gcc", ("-march=x86-64-v3",), (), has_fp16=True, needs=("avx2", "fma", "f16c")),
    Target("x86-64-v4 AVX-512", "gcc", ("-march=x86-64-v4",), (), has_fp16=True, needs=("avx512f", "avx512vl", "f16c")),
    Target("arm64", "aarch64-linux-gnu-gcc", ("-march=armv8-a", "-static"), ("qemu-aarch64",), has_fp16=True),
]


def _missing(target: Target) -> list[str]:
    if target.compiler == "gcc" and os.uname().machine != "x86_64":
        return [f"an x86-64 host for {target.name}"]
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    return [tool for tool in (target.compiler, *target.runner) if not shutil.which(tool)] + [
        f"the CPU flag {flag}" for flag in target.needs if flag not in flags
    ]


@pytest.fixture(scope="module", params=TARGETS, ids=lambda t: t.name)
def driver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Target, Path]:
    target: Target = request.param
    if missing := _missing(target):
        pytest.skip(f"{target.name}: needs {', '.join(missing)}")
    source = resources.files(native).joinpath(native.SOURCE)
    program = tmp_path_factory.mktemp("driver") / "native_driver"
    with resources.as_file(source) as src:
        cmd = [target.compiler, "-O3", "-ffp-contract=fast", "-fno-strict-aliasing", "-Wno-psabi", *target.flags]
        subprocess.run([*cmd, "-I", str(src.parent), "-o", str(program), str(DRIVER), "-lm"], check=True)
    return target, program


def _model(cell: str, seed: int) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(CharRNNConfig(VOCAB, cell, 2, 37, 12)).eval().requires_grad_(False)  # type: ignore[arg-type]


def _sampling() -> list[SamplingParams]:
    return [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.7, top_k=5),
        SamplingParams(temperature=1.3, top_p=0.8),
        SamplingParams(temperature=0.5, top_k=3, top_p=0.9),
    ]


def _buffer(t: Tensor | None) -> bytes:
    data = b"" if t is None else t.contiguous().numpy().tobytes()
    return struct.pack("<q", len(data)) + data


def _run(program: Path, runner: tuple[str, ...], blob: bytes, tmp: Path) -> list[bytes] | None:
    """The driver's output buffers, or None where its build has no float16 weights."""
    (tmp / "in").write_bytes(blob)
    done = subprocess.run([*runner, str(program), str(tmp / "in"), str(tmp / "out")], capture_output=True, timeout=300)
    if done.returncode == NO_FLOAT16:
        return None
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out, buffers = (tmp / "out").read_bytes(), []
    while out:
        (size,) = struct.unpack_from("<q", out)
        buffers.append(out[8 : 8 + size])
        out = out[8 + size :]
    return buffers


def _floats(data: bytes, *shape: int) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("wtype", ["fp32", "fp16"])
def test_a_build_for_another_cpu_follows_float32_and_decodes_what_this_one_does(
    driver: tuple[Target, Path], cell: str, wtype: native.WeightType, tmp_path: Path
) -> None:
    target, program = driver
    model = _model(cell, seed=len(cell) + len(wtype))
    layers, hidden = 2, 37
    ids = torch.randint(VOCAB, (B, T))
    state = tuple(s.normal_() * 0.5 for s in model.initial_state(B))
    sampling = BatchSampler(_sampling(), VOCAB).native()
    uniforms = torch.rand(B, S)
    here = native.library()
    assert here is not None
    packed = native.pack(model._serving_weights(), here.panel, wtype)  # one panel width on every CPU

    header = struct.pack("<4s9i", b"GBNC", native.CELLS[cell], layers, hidden, VOCAB, packed.table.shape[1],
                         native.WEIGHT_TYPES[wtype], B, T, S)  # fmt: skip
    inputs = [ids, state[0], state[1] if cell == "lstm" else None, sampling.temps, sampling.top_k, sampling.top_p,
              sampling.greedy, uniforms]  # fmt: skip
    outputs = _run(program, target.runner, header + b"".join(map(_buffer, [*packed.buffers(), *inputs])), tmp_path)
    if outputs is None:
        assert wtype == "fp16" and not target.has_fp16
        return
    assert wtype == "fp32" or target.has_fp16, f"{target.name} should have no float16 weights"

    tol = 1e-5 if wtype == "fp32" else 2e-3
    with torch.inference_mode():
        full, after = model(ids, tuple(s.clone() for s in state))
        read_logits, step_logits = _floats(outputs[0], B, VOCAB), _floats(outputs[1], B, VOCAB)
        torch.testing.assert_close(read_logits, full[:, -2], atol=tol, rtol=tol)
        torch.testing.assert_close(step_logits, full[:, -1], atol=tol, rtol=tol)
        torch.testing.assert_close(_floats(outputs[2], layers, B, hidden), after[0], atol=tol, rtol=tol)
        if cell == "lstm":
            torch.testing.assert_close(_floats(outputs[3], layers, B, hidden), after[1], atol=tol, rtol=tol)

        stepped = tuple(_floats(outputs[i], layers, B, hidden) for i in ((2, 3) if cell == "lstm" else (2,)))
        weights = native.NativeWeights(here, model._serving_weights(), wtype)
        decoded, _ = weights.decode(ids[:, -1], stepped, sampling, uniforms)
        theirs = torch.frombuffer(bytearray(outputs[4]), dtype=torch.int64).reshape(B, S)
    assert torch.equal(theirs, decoded), f"{target.name} decoded\n{theirs}\nwhere this CPU decoded\n{decoded}"

"""The native char-RNN kernels: built here with the C compiler, checked against torch's modules."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genbot.engine.batching import GenerationEngine
from genbot.engine.sampling import BatchSampler, SamplingParams
from genbot.networks import native
from genbot.networks.charrnn import CharRNN, CharRNNConfig, ServingPaths
from genbot.testing import tiny_charrnn

CHARS = "abcdefghijklmnopqrstuvwxyz .,;:!?'\"\n"


@pytest.fixture(scope="module")
def lib() -> native.NativeLibrary:
    built = native.library()
    if built is None:  # CI and the dev machines have gcc: there the kernels must build
        assert not any(native.shutil.which(cc) for cc in ("cc", "gcc", "clang")), native.unavailable_reason()
        pytest.skip(f"no C compiler here: {native.unavailable_reason()}")
    return built


def _weight_types(lib: native.NativeLibrary) -> list[str]:
    return list(lib.weight_types())


def _model(cell: str, layers: int = 2, hidden: int = 50, vocab: int = 30, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    config = CharRNNConfig(vocab, cell, layers, hidden, 12)  # type: ignore[arg-type]
    return CharRNN(config).eval().requires_grad_(False)


def _weights(lib: native.NativeLibrary, model: CharRNN, wtype: str) -> native.NativeWeights:
    return native.NativeWeights(lib, model._serving_weights(), wtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("layers", "hidden"), [(1, 8), (2, 50), (3, 37), (2, 200)])
def test_native_reading_and_stepping_follow_torchs_fused_modules(
    lib: native.NativeLibrary, cell: str, layers: int, hidden: int
) -> None:
    """Any cell, depth and width (a width that is no multiple of the vector length included)."""
    model = _model(cell, layers, hidden)
    ids = torch.randint(30, (3, 25))
    with torch.inference_mode():
        full, full_state = model(ids)
        for wtype in _weight_types(lib):
            weights = _weights(lib, model, wtype)
            tol = 1e-5 if wtype == "fp32" else 2e-3  # float16 weights round each weight to 11 bits
            top, state = weights.read(ids[:, :-1], model.initial_state(3))
            torch.testing.assert_close(weights.head(top), full[:, -2], atol=tol, rtol=tol)
            logits, state = weights.step(ids[:, -1], state)
            torch.testing.assert_close(logits, full[:, -1], atol=tol, rtol=tol)
            for mine, theirs in zip(state, full_state, strict=True):
                torch.testing.assert_close(mine, theirs, atol=tol, rtol=tol)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_native_row_is_the_same_alone_in_any_batch_and_in_any_chunking(lib: native.NativeLibrary, cell: str) -> None:
    """Batch-invariant by construction: every row of batches of 1 to 70, read whole or in chunks, bit for bit."""
    model = _model(cell, hidden=64)
    ids = torch.randint(30, (70, 9))
    with torch.inference_mode():
        for wtype in _weight_types(lib):
            weights = _weights(lib, model, wtype)
            alone = [weights.read(ids[i : i + 1], model.initial_state(1)) for i in range(70)]
            for b in (2, 5, 6, 7, 13, 70):
                _, state = weights.read(ids[:b, :4], model.initial_state(b))
                _, state = weights.read(ids[:b, 4:5], state)
                top, state = weights.read(ids[:b, 5:], state)
                logits, stepped = weights.step(ids[:b, 0], state)
                for i in range(b):
                    assert torch.equal(top[i], alone[i][0][0])
                    assert all(torch.equal(s[:, i], a[:, 0]) for s, a in zip(state, alone[i][1], strict=True))
                    lone_logits, lone_state = weights.step(ids[i : i + 1, 0], alone[i][1])
                    assert torch.equal(logits[i], lone_logits[0])
                    assert all(torch.equal(s[:, i], a[:, 0]) for s, a in zip(stepped, lone_state, strict=True))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_products_on_512_bit_vectors_give_the_same_bits_as_on_256_bit_ones(
    lib: native.NativeLibrary, cell: str
) -> None:
    """Whichever widths the load-time timing picks here (batches, lone rows, both), every row of
    every batch reads, steps and decodes to the same bits: the choice is one of speed only."""
    if not lib.has_wide:
        pytest.skip(f"no 512-bit build on this CPU ({lib.describe()})")
    model = _model(cell, hidden=200, vocab=70)  # 800 gate outputs: 50 panels, so 12-panel groups and leftovers
    ids = torch.randint(70, (20, 11))
    params = [SamplingParams(temperature=0.9, top_k=20 * (i % 2)) for i in range(20)]
    uniforms = torch.rand(20, 6)
    chosen = lib.wide_mode
    try:
        with torch.inference_mode():
            for wtype in _weight_types(lib):
                weights = _weights(lib, model, wtype)
                results = {}
                for mode in (0, native.WIDE_BLOCKS, native.WIDE_LONE, native.WIDE_BLOCKS | native.WIDE_LONE):
                    assert lib.set_wide(mode) == mode
                    runs = []
                    for b in (1, 2, 3, 7, 20):
                        top, state = weights.read(ids[:b, :-1], model.initial_state(b))
                        logits, state = weights.step(ids[:b, -1], state)
                        out, after = weights.decode(ids[:b, 0], state, _sampling(params[:b], 70), uniforms[:b])
                        runs.append((top, logits, out, *state, *after))
                    results[mode] = runs
                for mode, runs in results.items():
                    for narrow, wide in zip(results[0], runs, strict=True):
                        assert all(torch.equal(a, b) for a, b in zip(narrow, wide, strict=True)), (wtype, mode)
    finally:
        lib.set_wide(chosen)


def test_reading_a_prompt_equals_stepping_through_it(lib: native.NativeLibrary) -> None:
    model = _model("lstm", hidden=40)
    ids = torch.randint(30, (2, 12))
    with torch.inference_mode():
        weights = _weights(lib, model, "fp32")
        top, read_state = weights.read(ids, model.initial_state(2))
        state = model.initial_state(2)
        for t in range(12):
            logits, state = weights.step(ids[:, t], state)
        assert torch.equal(logits, weights.head(top))
        assert all(torch.equal(a, b) for a, b in zip(state, read_state, strict=True))


def _sampling(params: list[SamplingParams], vocab: int) -> native.NativeSampling:
    return BatchSampler(params, vocab).native()


def test_decode_samples_what_the_inverse_cdf_of_its_own_logits_gives(lib: native.NativeLibrary) -> None:
    """Greedy rows take the argmax, plain rows the inverse CDF of softmax(logits / t), top-k/top-p
    rows only from their most likely characters; the state is that of stepping the samples in."""
    model = _model("lstm", hidden=48, vocab=30, seed=4)
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.5),
        SamplingParams(temperature=1.3, top_k=3),
        SamplingParams(temperature=1.0, top_p=0.5),
    ]
    gen = torch.Generator().manual_seed(7)
    uniforms = torch.randint(0, 2**24, (5, 40), generator=gen).float() / 2**24
    start = torch.randint(30, (5,), generator=gen)
    with torch.inference_mode():
        weights = _weights(lib, model, "fp32")
        out, state = weights.decode(start, model.initial_state(5), _sampling(params, 30), uniforms)
        ids, replay = start, model.initial_state(5)
        for s in range(40):
            logits, replay = weights.step(ids, replay)
            for row, p in enumerate(params):
                _check_sample(int(out[row, s]), logits[row].double(), p, float(uniforms[row, s]))
            ids = out[:, s]
        assert all(torch.equal(a, b) for a, b in zip(state, replay, strict=True))


def _check_sample(got: int, logits: torch.Tensor, p: SamplingParams, u: float) -> None:
    if p.greedy:
        assert got == int(logits.argmax())
        return
    filtered = p.top_k or p.top_p < 1.0  # plain rows draw in vocabulary order, filtered ones most likely first
    order = torch.argsort(logits, descending=True, stable=True) if filtered else torch.arange(len(logits))
    probs = torch.softmax(logits[order] / p.temperature, -1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if p.top_k:
        keep[p.top_k :] = False
    if p.top_p < 1.0:
        keep &= (probs.cumsum(-1) - probs) < p.top_p
    kept = torch.where(keep, probs, 0.0)
    cdf = kept.cumsum(-1) / kept.sum()
    assert got in order[keep].tolist()  # never outside top-k / top-p
    # where u is not within rounding of a boundary, the pick is the inverse CDF's
    if float((cdf - u).abs().min()) > 1e-4:
        assert got == int(order[int(torch.searchsorted(cdf, torch.tensor(u, dtype=torch.float64), right=True))])


def test_out_of_range_ids_and_missing_float16_are_errors_not_crashes(lib: native.NativeLibrary) -> None:
    model = _model("gru", hidden=16)
    weights = _weights(lib, model, "fp32")
    with torch.inference_mode():
        for bad in (30, -1):
            with pytest.raises(RuntimeError, match="character id outside the vocabulary"):
                weights.step(torch.tensor([bad]), model.initial_state(1))
            with pytest.raises(RuntimeError, match="character id outside the vocabulary"):
                weights.read(torch.tensor([[1, 2, bad]]), model.initial_state(1))
    no_fp16 = native.NativeLibrary.__new__(native.NativeLibrary)
    no_fp16.__dict__.update(lib.__dict__, has_fp16=False)
    with pytest.raises(RuntimeError, match="float16"):
        _weights(no_fp16, model, "fp16")


@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``native.library()`` as in a new process (nothing built or failed yet), restored after."""
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failed", None)
    yield


def test_the_kernels_are_compiled_once_then_loaded_from_the_build_folder(
    lib: native.NativeLibrary, tmp_path: Path, fresh_library: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = native.library(tmp_path / "native")
    assert built is not None and built.path.parent == tmp_path / "native"
    assert stat.S_IMODE(os.stat(tmp_path / "native").st_mode) == 0o700

    real_run = subprocess.run

    def no_compiler(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        if "--version" not in cmd:
            raise AssertionError(f"compiled again: {cmd}")
        return real_run(cmd, capture_output=True, text=True, check=False)

    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    again = native.library(tmp_path / "native")
    assert again is not None and again.path == built.path


def test_without_a_compiler_the_native_paths_are_not_candidates_and_serving_goes_on(
    fresh_library: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from genbot.engine.paths import PathTuner, measure, prime_candidates, step_candidates

    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang to be found
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.sysconfig, "get_config_var", lambda name: None)
    model = _model("lstm", hidden=16)
    assert native.library() is None and "no C compiler" in (native.unavailable_reason() or "")
    assert not {"native", "native_fp16"} & {*prime_candidates(model), *step_candidates(model)}
    assert "native off" in PathTuner().key(model)
    with torch.inference_mode():
        forced = measure(model, "native", "native")  # asked for by name, yet not there: float32
        assert (forced.prime, forced.step) == ("fp32", "fp32") and "unavailable" in forced.reason
        model.use_paths(ServingPaths(prime="native", step="native", prime_rows=1, step_rows=1))
        with pytest.raises(RuntimeError, match="native kernels are unavailable here: no C compiler"):
            model.step(torch.tensor([1]), model.initial_state(1))


def test_the_default_build_folder_is_never_one_another_user_could_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"genbot-native-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # as if someone else had made it writable for all
    folder = native._default_dir()
    assert folder != shared and folder.parent == tmp_path and not stat.S_IMODE(folder.stat().st_mode) & 0o077
    shared.chmod(0o700)
    assert native._default_dir() == shared


async def test_the_engine_decodes_runs_of_characters_per_call_with_stops_lengths_and_cancels(
    lib: native.NativeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = tiny_charrnn(CHARS, seed=5)
    model = lm.network
    model.use_paths(ServingPaths(prime="native", step="native", prime_rows=1, step_rows=1))
    runs: list[tuple[int, int]] = []
    real = CharRNN.decode

    def decode(self: CharRNN, ids: torch.Tensor, *args: object) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        out, state = real(self, ids, *args)  # type: ignore[arg-type]
        runs.append(tuple(out.shape))  # type: ignore[arg-type]
        return out, state

    monkeypatch.setattr(CharRNN, "decode", decode)
    async with GenerationEngine(max_streams_per_model=8, max_queue=8) as e:
        long = e.submit(lm, "the ", SamplingParams(seed=1, max_length=300))
        text = "".join([c async for c in long])
        assert len(text) == 300 and (await long.result()).eval_count == 300
        assert max(s for _, s in runs) > 1  # a lone stream: several characters per call
        # a stop string ends the stream where it first appears, mid-run, and is not shown
        free = "".join([c async for c in e.submit(lm, "the ", SamplingParams(seed=2, max_length=200))])
        stop = next(free[i : i + 2] for i in range(5, 150) if " " not in free[i : i + 2])
        stopped = e.submit(lm, "the ", SamplingParams(seed=2, max_length=200, stop=(stop,)))
        assert "".join([c async for c in stopped]) == free[: free.index(stop)]
        assert (await stopped.result()).done_reason == "stop"
        endless = e.submit(lm, "the ", SamplingParams(seed=3, max_length=100_000))
        await anext(endless)
        await asyncio.sleep(0.05)
        endless.cancel()
        stats = await endless.result()
        assert stats.done_reason == "cancelled" and 0 < stats.eval_count < 100_000


def test_a_native_path_that_computes_wrong_numbers_here_is_never_a_candidate(
    lib: native.NativeLibrary, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A compiler's or CPU's quirk must cost the native path, never the text: checked against float32 at load."""
    from genbot.engine.paths import measure, step_candidates

    model = _model("lstm", hidden=24)
    assert "native" in step_candidates(model)
    real_step = native.NativeWeights.step

    def off_by_a_little(self: native.NativeWeights, ids: torch.Tensor, state: object) -> object:
        logits, new = real_step(self, ids, state)  # type: ignore[arg-type]
        return logits + 0.05, new

    monkeypatch.setattr(native.NativeWeights, "step", off_by_a_little)
    assert not {"native", "native_fp16"} & set(step_candidates(model)) and "disagrees with float32" in caplog.text
    with torch.inference_mode():
        chosen = measure(model)
    assert chosen.step not in ("native", "native_fp16") and chosen.prime not in ("native", "native_fp16")


def test_shapes_that_do_not_fit_the_network_are_refused_before_the_kernels_read_them(lib: native.NativeLibrary) -> None:
    """The C side trusts its buffers' sizes: a state, ids or sampling rows of another shape never reach it."""
    model = _model("lstm", hidden=16)
    weights = _weights(lib, model, "fp32")
    sampling = _sampling([SamplingParams()] * 2, 30)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="state must be"):
            weights.step(torch.tensor([1, 2, 3]), model.initial_state(2))  # 3 ids, 2 rows of state
        with pytest.raises(ValueError, match="state must be"):
            weights.read(torch.tensor([[1, 2]]), (model.initial_state(1)[0],))  # an LSTM without its cell
        with pytest.raises(ValueError, match="top-layer outputs"):
            weights.head(torch.zeros(1, 17))
        with pytest.raises(ValueError, match="decode needs 3 ids"):
            weights.decode(torch.tensor([1, 2, 3]), model.initial_state(3), sampling, torch.rand(3, 4))
        out, _ = weights.decode(torch.tensor([1, 2]), model.initial_state(2), sampling, torch.rand(2, 4))
    assert out.shape == (2, 4) and int(out.min()) >= 0 and int(out.max()) < 30

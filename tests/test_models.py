"""CharRNN, vocabulary and checkpoint folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genbot.errors import CheckpointError
from genbot.networks.card import ModelCard, Weights
from genbot.networks.charrnn import CharRNN, CharRNNConfig, pad_rows
from genbot.networks.checkpoint import architecture_of, load_model, save_model
from genbot.networks.vocab import Vocab


def _save_tiny(folder: Path, cell: str = "lstm", dtype: str = "float32") -> tuple[CharRNN, Vocab]:
    vocab = Vocab.from_text("abcdefgh \n'\"-.")
    model = CharRNN(CharRNNConfig(len(vocab), cell, 2, 16, 8))  # type: ignore[arg-type]
    card = ModelCard(name="tiny", architecture=architecture_of(model.config), weights=Weights(sha256=""))
    save_model(folder, model, vocab, card, dtype=dtype)
    return model, vocab


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_by_step_logits_equal_full_sequence(cell: str) -> None:
    model = CharRNN(CharRNNConfig(30, cell, 3, 32, 12)).eval()  # type: ignore[arg-type]
    ids = torch.randint(30, (4, 25))
    with torch.no_grad():
        full, full_state = model(ids)
        state = model.initial_state(4)
        steps = []
        for t in range(ids.shape[1]):
            logits, state = model.step(ids[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    for a, b in zip(state, full_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_primed_state_continues_like_one_long_sequence() -> None:
    model = CharRNN(CharRNNConfig(20, "lstm", 2, 16, 8)).eval()
    ids = torch.randint(20, (2, 30))
    with torch.no_grad():
        whole, _ = model(ids)
        _, state = model(ids[:, :10])
        rest, _ = model(ids[:, 10:], state)
    torch.testing.assert_close(rest, whole[:, 10:], rtol=1e-5, atol=1e-5)


def test_invalid_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="cell must be one of"):
        CharRNNConfig(10, "transformer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        CharRNNConfig(10, dropout=1.5)


def test_vocab_maps_lookalikes_and_drops_the_rest() -> None:
    vocab = Vocab.from_text("abce '\"-.")
    enc = vocab.encode("\u201cab\u201d \u00e9 \u2014 \u4e2d!")
    assert vocab.decode(enc.ids) == '"ab" e - '
    assert enc.mapped == {"\u201c": '"', "\u201d": '"', "\u00e9": "e", "\u2014": "-"}
    assert enc.dropped == ["\u4e2d", "!"]
    assert enc.affected


def test_vocab_extension_keeps_old_ids(tmp_path: Path) -> None:
    vocab = Vocab.from_text("abc")
    bigger, added = vocab.extended("cab\u00e9z")
    assert added == ["z", "\u00e9"]
    assert bigger.chars[:3] == ["a", "b", "c"]
    (tmp_path / "v.json").write_text(bigger.to_json(), encoding="utf-8")
    assert Vocab.load(tmp_path / "v.json").chars == bigger.chars


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_save_load_round_trips_bit_exactly(tmp_path: Path, cell: str) -> None:
    model, vocab = _save_tiny(tmp_path / "m", cell)
    loaded = load_model(tmp_path / "m")
    assert loaded.vocab.chars == vocab.chars
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    assert not any(p.endswith(".tmp") for p in map(str, (tmp_path / "m").iterdir()))


def test_float16_storage_halves_the_file_and_loads_close(tmp_path: Path) -> None:
    model, _ = _save_tiny(tmp_path / "a", dtype="float32")
    (tmp_path / "b").mkdir()
    card = ModelCard.read(tmp_path / "a" / "plugin.toml")
    save_model(tmp_path / "b", model, load_model(tmp_path / "a").vocab, card, dtype="float16")
    size_a = (tmp_path / "a" / "model.safetensors").stat().st_size
    size_b = (tmp_path / "b" / "model.safetensors").stat().st_size
    assert size_b < 0.6 * size_a
    loaded = load_model(tmp_path / "b")
    torch.testing.assert_close(loaded.network.emb.weight, model.emb.weight, atol=1e-3, rtol=1e-3)


def test_corrupt_weights_fail_with_a_clear_error(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_model(tmp_path / "m")


def test_truncated_weights_with_matching_hash_fail_cleanly(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    card = ModelCard.read(tmp_path / "m" / "plugin.toml")
    from genbot.networks.checkpoint import sha256_bytes

    fixed = card.model_copy(update={"weights": Weights(sha256=sha256_bytes(weights.read_bytes()))})
    (tmp_path / "m" / "plugin.toml").write_text(fixed.to_toml(), encoding="utf-8")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_model(tmp_path / "m")


def test_shape_mismatch_with_card_is_reported(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    path = tmp_path / "m" / "plugin.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("hidden = 16", "hidden = 32"), encoding="utf-8")
    with pytest.raises(CheckpointError, match="shape"):
        load_model(tmp_path / "m")


def test_vocab_size_mismatch_and_unknown_card_keys(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    (tmp_path / "m" / "vocab.json").write_text('{"chars": ["a", "b"]}', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"vocab\.json has 2 characters"):
        load_model(tmp_path / "m")
    _save_tiny(tmp_path / "n")
    path = tmp_path / "n" / "plugin.toml"
    path.write_text("surprise = 1\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(CheckpointError, match="surprise"):
        load_model(tmp_path / "n")


def test_missing_files_are_named(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not a model folder"):
        load_model(tmp_path / "nowhere")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_prime_matches_full_forward_closely(cell: str) -> None:
    model = CharRNN(CharRNNConfig(30, cell, 2, 32, 12)).eval()  # type: ignore[arg-type]
    ids = torch.randint(30, (1, 50))
    with torch.no_grad():
        full, full_state = model(ids)
        last, state = model.prime(ids)
    assert last.dtype == torch.float32 and last.shape == (1, 30)
    torch.testing.assert_close(last, full[:, -1], atol=0.05, rtol=0.05)
    torch.testing.assert_close(state[0], full_state[0], atol=0.05, rtol=0.05)
    # The bfloat16 twin follows the weights when they change.
    with torch.no_grad():
        model.head.bias.add_(1.0)
    torch.testing.assert_close(model.prime(ids)[0], full[:, -1] + 1.0, atol=0.05, rtol=0.05)


def test_shared_step_weights_keep_every_result() -> None:
    model = CharRNN(CharRNNConfig(30, "lstm", 2, 32, 12)).eval()
    ids = torch.randint(30, (3, 20))
    with torch.no_grad():
        before, _ = model(ids)
        state = model.initial_state(3)
        step_before, _ = model.step(ids[:, 0], state)
        model.share_step_weights()
        after, _ = model(ids)
        step_after, _ = model.step(ids[:, 0], state)
    assert torch.equal(step_before, step_after)
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)
    assert model.rnn.weight_hh_l0.data_ptr() == model._step_weights().layers[0][1].data_ptr()


def _paths_cases() -> list[tuple[str, str, str]]:
    from genbot.networks.charrnn import bf16_step_available, fp16_available, onednn_available

    cases = [(cell, "fp32", "fp32") for cell in ("rnn", "lstm", "gru")]
    cases += [(cell, "bf16", "fp32") for cell in ("lstm", "gru")]
    cases += [(cell, "steps", "fp32") for cell in ("rnn", "lstm", "gru")]
    if fp16_available():
        cases += [("lstm", "fp16", "fp16"), ("gru", "fp16", "fp16"), ("rnn", "fp32", "fp16")]
        cases += [(cell, "steps", step) for cell in ("rnn", "lstm", "gru") for step in ("fp16", "rowwise_fp16")]
    if onednn_available():
        cases += [(cell, "onednn", "onednn") for cell in ("rnn", "lstm", "gru")]
        cases += [("lstm", "steps", "onednn"), ("gru", "fp32", "onednn")]
    if bf16_step_available():  # emulated where the CPU lacks bf16 instructions: slow, still correct
        cases += [(cell, "steps", "bf16") for cell in ("rnn", "lstm", "gru")]
        cases += [("lstm", "bf16", "bf16"), ("gru", "fp32", "bf16")]
    for path in _native_paths():
        cases += [(cell, path, path) for cell in ("rnn", "lstm", "gru")]
        cases += [("lstm", "steps", path), ("gru", "fp32", path)]
    return cases


def _native_paths() -> list[str]:
    from genbot.networks import native

    lib = native.library()
    return ["native", *(["native_fp16"] if lib.has_fp16 else [])] if lib is not None else []


@pytest.mark.parametrize(("cell", "prime", "step"), _paths_cases())
def test_every_serving_path_reads_prompts_in_batched_chunks_exactly_as_alone(cell: str, prime: str, step: str) -> None:
    from genbot.engine.paths import _step_rows, measure

    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(30, cell, 2, 32, 12)).eval().requires_grad_(False)  # type: ignore[arg-type]
    model.share_step_weights()
    with torch.inference_mode():
        paths = measure(model, prime, step)  # type: ignore[arg-type]
        assert (paths.prime, paths.step) == (prime, step) and "forced" in paths.reason
        exact = "prime " + prime + " (forced)" in paths.reason  # the load-time check found it batch-invariant
        model.use_paths(paths)
        ids = torch.randint(30, (5, 17))
        full, _ = model(ids)
        _, state = model.read(ids[:, :6], model.initial_state(5))
        _, state = model.read(ids[:, 6:7], state)
        logits, state = model.read_end(*model.read(ids[:, 7:], state))
        for i in range(5 if exact else 0):
            alone_logits, alone_state = model.prime(ids[i : i + 1])
            assert torch.equal(alone_logits, logits[i : i + 1])
            assert all(torch.equal(a, b[:, i : i + 1]) for a, b in zip(alone_state, state, strict=True))
        if prime == "steps":  # one step per character: exact wherever the step kernel is
            assert exact == bool(_step_rows(model, step))
        tol = 0.05 if "bf16" in (prime, step) else 1e-3
        torch.testing.assert_close(logits, full[:, -1], atol=tol, rtol=tol)
        # stepping on from the primed state follows the full forward closely on every step path
        nxt = torch.randint(30, (5,))
        stepped, _ = model.step(nxt, state)
        longer, _ = model(torch.cat([ids, nxt[:, None]], dim=1))
        torch.testing.assert_close(stepped, longer[:, -1], atol=tol, rtol=tol)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_exact_mode_picks_prompt_and_step_paths_that_are_batch_invariant_on_this_cpu(cell: str) -> None:
    """Whatever this CPU's BLAS does with row counts, a prompt read in a batch, in chunks, equals it read alone."""
    from genbot.engine.paths import measure

    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(30, cell, 2, 48, 12)).eval().requires_grad_(False)  # type: ignore[arg-type]
    model.share_step_weights()
    with torch.inference_mode():
        paths = measure(model)
        if "none of" in paths.reason:
            pytest.skip(f"no exact path on this CPU: {paths.reason}")
        model.use_paths(paths)
        ids = torch.randint(30, (4, 23))
        _, state = model.read(ids[:, :9], model.initial_state(4))
        logits, state = model.read_end(*model.read(ids[:, 9:], state))
        steps = torch.randint(30, (4,))
        # The engine pads fewer rows than the step path needs with copies (prime pads by itself).
        rows = paths.step_rows
        stepped, _ = model.step(pad_rows(steps, rows), tuple(pad_rows(s, rows, dim=1) for s in state))
        for i in range(4):
            alone_logits, alone_state = model.prime(ids[i : i + 1])
            assert torch.equal(alone_logits, logits[i : i + 1]), paths.reason
            lone_state = tuple(pad_rows(s, rows, dim=1) for s in alone_state)
            alone_step, _ = model.step(pad_rows(steps[i : i + 1], rows), lone_state)
            assert torch.equal(alone_step[:1], stepped[i : i + 1]), paths.reason


@pytest.mark.slow
def test_a_step_path_the_check_calls_exact_agrees_alone_and_in_every_batch_up_to_128_rows() -> None:
    """The served shape (2x384: a 768-wide product in layer 1), every step path, batch sizes the
    load-time check does not try: a kernel that rounds large batches its own way must fail the check."""
    from genbot.engine.paths import _paths, _step_rows, step_candidates

    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(65, "lstm", 2, 384, 64)).eval().requires_grad_(False)
    model.share_step_weights()
    gen = torch.Generator().manual_seed(3)
    state = tuple(torch.randn(s.shape, generator=gen) * 0.5 for s in model.initial_state(128))
    ids = torch.randint(65, (128,), generator=gen)

    def stepped(first: int, b: int, rows: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        chosen = slice(first, first + b)
        return model.step(pad_rows(ids[chosen], rows), tuple(pad_rows(s[:, chosen], rows, 1) for s in state))

    exact = []
    with torch.inference_mode():
        for path in [p for p in step_candidates(model) if not p.startswith("rowwise")]:
            rows = _step_rows(model, path)
            if not rows:
                continue
            exact.append(path)
            model.use_paths(_paths(model, step=path, rows=rows))
            lone = [stepped(i, 1, rows) for i in range(128)]  # a kernel may round only a few rows its own way
            for b in (40, 100, 127, 128):
                logits, new_state = stepped(0, b, rows)
                for i in range(b):
                    a_logits, a_state = lone[i]
                    assert torch.equal(a_logits[:1], logits[i : i + 1]), (path, b, i)
                    assert all(torch.equal(x[:, :1], y[:, i : i + 1]) for x, y in zip(a_state, new_state, strict=True))
    if not exact:
        pytest.skip("no step kernel is exact here: exact mode steps rowwise")


def test_fast_mode_steps_a_few_rows_through_the_lone_stream_kernel_and_a_batch_through_the_batched_one() -> None:
    from dataclasses import replace

    from genbot.engine.paths import measure
    from genbot.networks.charrnn import ServingPaths, fp16_available

    if not fp16_available():
        pytest.skip("needs FBGEMM's float16 kernel beside float32")
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(30, "lstm", 2, 48, 12)).eval().requires_grad_(False)
    model.share_step_weights()
    gen = torch.Generator().manual_seed(2)
    state = tuple(torch.randn(s.shape, generator=gen) for s in model.initial_state(8))
    ids = torch.randint(30, (8,), generator=gen)

    def stepped(paths: ServingPaths, rows: int) -> torch.Tensor:
        model.use_paths(paths)
        return model.step(ids[:rows], tuple(s[:, :rows] for s in state))[0]

    fp32, fp16 = ServingPaths(step="fp32", step_rows=1), ServingPaths(step="fp16", step_rows=1)
    mixed = replace(fp32, step_few="fp16", few_below=4)
    with torch.inference_mode():
        assert not torch.equal(stepped(fp16, 3), stepped(fp32, 3))  # the two kernels are told apart
        for rows in (1, 3):
            assert torch.equal(stepped(mixed, rows), stepped(fp16, rows))
        for rows in (4, 8):
            assert torch.equal(stepped(mixed, rows), stepped(fp32, rows))
        # exact mode never mixes kernels: a row's result would depend on its batch
        assert measure(model, batch_invariant=True).step_few is None
        fast = measure(model, batch_invariant=False)
        assert fast.step_few is None or (fast.step_few != fast.step and fast.few_below > 1)


def test_fast_mode_reads_a_lone_prompt_through_the_reader_fastest_alone_and_a_batch_through_the_batched_one() -> None:
    from dataclasses import replace

    from genbot.engine.paths import measure
    from genbot.networks import native
    from genbot.networks.charrnn import ServingPaths

    if native.library() is None:
        pytest.skip(f"needs the native kernels beside float32: {native.unavailable_reason()}")
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(30, "lstm", 2, 48, 12)).eval().requires_grad_(False)
    ids = torch.randint(30, (3, 20), generator=torch.Generator().manual_seed(2))

    def primed(paths: ServingPaths, rows: int) -> torch.Tensor:
        model.use_paths(paths)
        return model.prime(ids[:rows])[0]

    fp32, fp16 = ServingPaths(prime="fp32", prime_rows=1), ServingPaths(prime="native_fp16", prime_rows=1)
    mixed = replace(fp32, prime_lone="native_fp16")
    with torch.inference_mode():
        assert not torch.equal(primed(fp16, 1), primed(fp32, 1))  # the two readers are told apart
        assert torch.equal(primed(mixed, 1), primed(fp16, 1))
        for rows in (2, 3):
            assert torch.equal(primed(mixed, rows), primed(fp32, rows))
        # exact mode never mixes readers: a prompt's state would depend on its batch
        assert measure(model, batch_invariant=True).prime_lone is None
        fast = measure(model, batch_invariant=False)
        assert fast.prime_lone is None or fast.prime_lone != fast.prime
        if fast.prime_lone:
            assert fast.measured[fast.prime_lone] < fast.measured[fast.prime]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rowwise_fp16_steps_every_row_as_the_float16_kernel_steps_it_alone(cell: str) -> None:
    """The float16 row-at-a-time path is exact on any CPU: a row in a batch equals that row alone on fp16."""
    from genbot.engine.paths import _paths, _step_rows
    from genbot.networks.charrnn import fp16_available

    if not fp16_available():
        pytest.skip("no FBGEMM float16 kernels in this torch build")
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(30, cell, 2, 48, 12)).eval().requires_grad_(False)  # type: ignore[arg-type]
    model.share_step_weights()
    with torch.inference_mode():
        assert _step_rows(model, "rowwise_fp16") == 1
        state = tuple(torch.randn(s.shape) * 0.5 for s in model.initial_state(7))
        ids = torch.randint(30, (7,))
        model.use_paths(_paths(model, step="rowwise_fp16", rows=1))
        batched, batched_state = model.step(ids, state)
        model.use_paths(_paths(model, step="fp16", rows=1))
        for i in range(7):
            alone, alone_state = model.step(ids[i : i + 1], tuple(s[:, i : i + 1] for s in state))
            assert torch.equal(alone, batched[i : i + 1])
            assert all(torch.equal(a, b[:, i : i + 1]) for a, b in zip(alone_state, batched_state, strict=True))

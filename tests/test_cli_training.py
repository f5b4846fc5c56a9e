"""``genbot train`` / ``genbot eval`` as a user types them (the CLI code in-process), JSON output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import genbot, genbot_here

SMALL = ["--layers", "1", "--hidden", "32", "--emb", "8", "--block", "32", "--batch", "8", "--threads", "1"]


def test_train_json_then_eval_json(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = genbot_here("train", "--corpus", str(corpus_file), "--out", str(out), *SMALL, "--steps", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "done"
    assert summary["chars_per_s"] > 0
    assert {"val_block", "val_stateful", "val_block_bpc", "val_stateful_bpc"} <= summary["losses"].keys()
    assert any(line["event"] == "eval" and line["sample"] for line in lines)

    proc = genbot_here("eval", str(out), "--corpus", str(corpus_file), "--iters", "2", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["val_block"] > 0
    assert report["val_stateful"] == pytest.approx(summary["losses"]["val_stateful"], abs=1e-3)


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("empty", [], "empty"),
        ("binary", [], "binary"),
        ("short", [], "too short"),
        ("good", ["--hidden", "-3"], "--hidden"),
        ("good", ["--steps", "5", "--seconds", "5"], "exactly one budget"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, corpus_file: Path, setup: str, extra: list[str], message: str
) -> None:
    files = {"empty": b"", "binary": b"\x00\xff\x00", "short": b"abc def"}
    corpus = corpus_file
    if setup in files:
        corpus = tmp_path / f"{setup}.txt"
        corpus.write_bytes(files[setup])
    args = ["train", "--corpus", str(corpus), "--out", str(tmp_path / "m"), *SMALL]
    proc = genbot_here(*args, *(extra or ["--steps", "5"]))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_of_corrupt_weights_is_a_clear_error(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert genbot_here("train", "--corpus", str(corpus_file), "--out", str(out), *SMALL, "--steps", "3").returncode == 0
    (out / "model.safetensors").write_bytes(b"garbage")
    proc = genbot_here("eval", str(out), "--corpus", str(corpus_file))
    assert proc.returncode == 2
    assert "sha256 does not match" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_register_serves_the_output_as_a_new_model(corpus_file: Path, tmp_path: Path, plugins_dir: Path) -> None:
    out = tmp_path / "runs" / "first"
    proc = genbot_here(
        "train", "--corpus", str(corpus_file), "--out", str(out), *SMALL, "--steps", "3", "--register", "mine", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    registered = json.loads(proc.stdout.splitlines()[-1])
    assert (registered["event"], registered["model"], registered["version"]) == ("registered", "mine", 1)
    listed = genbot_here("plugins", "--json")
    kinds = {row["name"]: row["kind"] for row in map(json.loads, listed.stdout.splitlines())}
    assert kinds == {"alpha": "bundled folder", "beta": "bundled folder", "mine": "data folder"}


def test_train_register_refuses_a_bad_name_before_training(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    proc = genbot_here(
        "train", "--corpus", str(corpus_file), "--out", str(out), *SMALL, "--steps", "3", "--register", "A B"
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: invalid model name")
    assert not out.exists()


def test_train_bf16_trains_on_any_cpu_and_says_which_precision_ran(corpus_file: Path, tmp_path: Path) -> None:
    # Where bfloat16 cannot run or would be slower (any CPU without bf16 instructions), float32 trains.
    # A child process: the warning is a log line, and the real command line sends it to stderr.
    args = ["train", "--corpus", str(corpus_file), *SMALL, "--cell", "lstm", "--steps", "4", "--bf16", "--json"]
    proc = genbot(*args, "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    start = json.loads(proc.stdout.splitlines()[0])
    assert start["event"] == "start" and json.loads(proc.stdout.splitlines()[-1])["event"] == "done"
    assert start["bf16"] is (start["bf16_refused"] is None)
    assert ("training in float32" in proc.stderr) is (start["bf16_refused"] is not None)

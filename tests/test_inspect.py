"""Looking inside the networks: activations, features, discovery, pictures, ``genbot inspect`` and ``/inspect``."""

from __future__ import annotations

import html
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from genbot.analysis import features
from genbot.analysis.activations import trace_text
from genbot.analysis.discovery import discover
from genbot.analysis.render import ColourScale, render_html, render_png
from genbot.analysis.report import InspectRequest, inspect_model
from genbot.errors import InvalidRequest
from genbot.networks.charrnn import Cell, CharRNN, CharRNNConfig
from genbot.networks.checkpoint import LoadedGenerator, load_model
from genbot.networks.vocab import Vocab
from genbot.training.trainer import TrainConfig, train
from tests.helpers import genbot_here, write_model_folder

TEXT = 'int main(void) {\n\t/* say "hi" */\n\tif (x) { f(a, (b)); }\n}\n'


def _tiny(cell: Cell, text: str = TEXT, layers: int = 2) -> tuple[CharRNN, Vocab]:
    torch.manual_seed(0)
    vocab = Vocab.from_text(text)
    return CharRNN(CharRNNConfig(len(vocab), cell, layers, 16, 8)).eval(), vocab


# ----- activations ------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_activations_match_stepping_and_the_fused_forward(cell: Cell) -> None:
    model, vocab = _tiny(cell)
    trace = trace_text(model, vocab, TEXT)
    ids = torch.tensor(vocab.encode_strict(TEXT))
    state = model.initial_state(1)
    with torch.no_grad():
        for t, i in enumerate(ids):
            _, state = model.step(i[None], state)
            for layer, lt in enumerate(trace.layers):
                np.testing.assert_allclose(lt.h[t], state[0][layer, 0].numpy(), atol=1e-5)
                if cell == "lstm":
                    assert lt.c is not None
                    np.testing.assert_allclose(lt.c[t], state[1][layer, 0].numpy(), atol=1e-5)
        logits, final = model(ids[None])
    np.testing.assert_allclose(trace.layers[-1].h[-1], final[0][-1, 0].numpy(), atol=1e-5)
    logp = torch.log_softmax(logits[0, :-1], -1).gather(1, ids[1:, None])[:, 0]
    np.testing.assert_allclose(trace.surprise[1:], -logp.numpy(), atol=1e-5)
    assert np.isnan(trace.surprise[0])


def test_gates_recomputed_by_hand_match() -> None:
    model, vocab = _tiny("lstm")
    trace = trace_text(model, vocab, TEXT)
    lt, t = trace.layers[1], 20
    w_ih, w_hh, b_ih, b_hh = (w.detach() for w in model._layer_weights(1))
    x, h_prev = torch.from_numpy(trace.layers[0].h[t]), torch.from_numpy(lt.h[t - 1])
    i, f, g, o = (w_ih @ x + b_ih + w_hh @ h_prev + b_hh).chunk(4)  # (H,) each
    for name, want in {"i": i.sigmoid(), "f": f.sigmoid(), "g": g.tanh(), "o": o.sigmoid()}.items():
        np.testing.assert_allclose(lt.gates[name][t], want.numpy(), atol=1e-5)
    assert lt.c is not None
    c = lt.gates["f"][t] * lt.c[t - 1] + lt.gates["i"][t] * lt.gates["g"][t]
    np.testing.assert_allclose(lt.c[t], c, atol=1e-5)
    np.testing.assert_allclose(lt.h[t], lt.gates["o"][t] * np.tanh(c), atol=1e-5)


def test_gru_gates_recomputed_by_hand_match() -> None:
    model, vocab = _tiny("gru", layers=1)
    trace = trace_text(model, vocab, TEXT)
    lt, t = trace.layers[0], 9
    w_ih, w_hh, b_ih, b_hh = (w.detach() for w in model._layer_weights(0))
    x = model.emb.weight.detach()[vocab.index[TEXT[t]]]
    h_prev = torch.from_numpy(lt.h[t - 1])
    xr, xz, xn = (w_ih @ x + b_ih).chunk(3)
    hr, hz, hn = (w_hh @ h_prev + b_hh).chunk(3)
    r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
    n = (xn + r * hn).tanh()
    np.testing.assert_allclose(lt.gates["r"][t], r.numpy(), atol=1e-5)
    np.testing.assert_allclose(lt.gates["n"][t], n.numpy(), atol=1e-5)
    np.testing.assert_allclose(lt.h[t], ((1 - z) * n + z * h_prev).numpy(), atol=1e-5)


def test_unknown_characters_follow_the_vocab_policy_and_are_reported() -> None:
    model, vocab = _tiny("lstm")
    trace = trace_text(model, vocab, "if (\u201cx\u201d) \u2603{ }")
    assert trace.mapped == {"\u201c": '"', "\u201d": '"'}
    assert trace.dropped == ["\u2603"]
    assert trace.text == 'if ("x") { }'
    assert trace.layers[0].h.shape == (len(trace.text), 16)


@pytest.mark.parametrize(("text", "message"), [("", "empty"), ("x" * 20_001, "at most 20,000"), ("\u2603", "two")])
def test_bad_texts_are_refused(text: str, message: str) -> None:
    model, vocab = _tiny("lstm", TEXT + "x")
    with pytest.raises(InvalidRequest, match=message):
        trace_text(model, vocab, text)


# ----- features ---------------------------------------------------------------------------------


def _on(signal: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in signal)


def test_feature_scanners() -> None:
    assert _on(features.quotes('a "bc" d')) == "00111000"
    assert _on(features.quotes("don't 'go' x")) == "000000111000"
    assert _on(features.quotes('\'tis\nx "a\nb" c')) == "1111" + "000" + "1111" + "000"  # ' ends at a newline
    assert list(features.line_position("ab\ncd")) == [1, 2, 0, 1, 2]
    assert _on(features.comment("a /* b */ c // d\ne")) == "000111110000011100"
    assert list(features.bracket_depth('f(a{b}) "(" /* { */ }')) == [0, 1, 1, 2, 2, 1, *[0] * 15]
    assert _on(features.math_mode("a $x$ b $$y$$ \\(z\\)")) == "0011100011111001110"
    depth = features.env_depth("\\begin{a}x\\begin{b}y\\end{b}\\end{a}z")
    assert depth[9] == 1 and depth[19] == 2 and depth[27] == 1 and depth[-1] == 0


def test_unknown_feature_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="unknown feature 'depth'"):
        features.feature_signal("depth", "abc")


# ----- discovery on a tiny model trained on text where the answer is known ----------------------


def _bracket_text(n_chars: int, seed: int) -> str:
    """Lines of nested ( ) and { } around a few letters; the next char depends on the depth."""
    rng = random.Random(seed)

    def expr(depth: int) -> str:
        parts = []
        for _ in range(rng.randint(1, 3)):
            if depth < 4 and rng.random() < 0.5:
                left, right = rng.choice([("(", ")"), ("{", "}")])
                parts.append(left + expr(depth + 1) + right)
            else:
                parts.append(rng.choice("abxy"))
        return "".join(parts)

    lines: list[str] = []
    while sum(map(len, lines)) < n_chars:
        lines.append(expr(0) + ";\n")
    return "".join(lines)[:n_chars]


@pytest.fixture(scope="module")
def bracket_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedGenerator:
    """A 1x32 LSTM trained for 400 steps on bracket text (a few seconds on one thread)."""
    folder = tmp_path_factory.mktemp("brackets")
    corpus = folder / "corpus.txt"
    corpus.write_text(_bracket_text(30_000, 0), encoding="utf-8")
    cfg = TrainConfig(
        layers=1, hidden=32, embedding=16, block=64, batch=32, steps=400, threads=1,
        eval_every=400, eval_iters=2, final_eval_iters=2, seed=1,
    )  # fmt: skip
    train(cfg, corpus, folder / "model", sink=lambda event: None)
    return load_model(folder / "model")


def test_discovery_recovers_a_planted_bracket_depth_unit(bracket_model: LoadedGenerator) -> None:
    text = _bracket_text(4000, 99)
    found = discover(trace_text(bracket_model.network, bracket_model.vocab, text), "bracket-depth", top_k=3)
    assert found.units_scored == 64 and len(found.top) == 3
    assert abs(found.top[0].r) > 0.8, found
    assert found.baseline < 0.3 and abs(found.top[0].r) > 3 * found.baseline
    # The same architecture untrained: its best unit is far weaker, so training planted the counter.
    torch.manual_seed(0)
    untrained = CharRNN(bracket_model.network.config).eval()
    chance = discover(trace_text(untrained, bracket_model.vocab, text), "bracket-depth", top_k=1)
    assert abs(found.top[0].r) > abs(chance.top[0].r) + 0.2


def test_inspect_model_renders_the_found_unit(bracket_model: LoadedGenerator) -> None:
    req = InspectRequest(_bracket_text(1500, 5), find="bracket-depth", surprise=True, gates=True)
    report = inspect_model(bracket_model, req)
    best = report.discovery.top[0] if report.discovery else None
    assert best is not None and (report.unit.layer, report.unit.index, report.unit.kind) == (0, best.index, best.kind)
    assert set(report.files) == {"unit.png", "unit.html", "surprise.png", "surprise.html", "gates.png"}
    data = json.loads(json.dumps(report.to_dict(values=True)))
    assert len(data["values"]) == len(data["surprise"]) == 1500
    assert any("bracket-depth" in line for line in report.lines())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layer": 2}, "layer must be 0..0"),
        ({"unit": 32}, "unit must be 0..31"),
        ({"kind": "z"}, "kind must be one of"),
        ({"find": "depth"}, "unknown feature"),
        ({"find": "comment", "kind": "i"}, "--find scores h and c"),
    ],
)
def test_bad_requests_name_the_field(bracket_model: LoadedGenerator, changes: dict[str, object], message: str) -> None:
    req = InspectRequest("(a);\n", **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=message):
        inspect_model(bracket_model, req)


# ----- rendering --------------------------------------------------------------------------------


def test_png_is_readable_and_html_holds_every_char_escaped() -> None:
    text = "if (a < b && c > \"d\") {\n\tx = $y$; // 'q'\n}\n" * 3 + "é" * 150
    values = np.linspace(-1, 1, len(text))
    scale = ColourScale("RdBu_r", -1, 1, "h activation")
    png = render_png(text, values, scale, "test <title>")
    image = imread(io.BytesIO(png), format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = image.shape[:2]
    assert 1000 <= width <= 1100 and 100 <= height <= 400  # 100 columns of 9 px plus the colour bar
    page = render_html(text, values, scale, "test <title>")
    assert page.count("<span ") == len(text)
    for ch in set(text) - {"\n", "\t"}:
        assert f">{html.escape(ch)}</span>" in page
    assert '<span class="s0" title="-1.000">i</span>' in page and page.count('class="s64"') >= 1
    assert "test &lt;title&gt;" in page and "linear-gradient" in page


# ----- front ends: genbot inspect and /inspect --------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A random-weight 2x32 LSTM folder over TEXT's characters."""
    return write_model_folder(tmp_path / "models", "cee", TEXT + "abcdefghijklmnopqrstuvwxyz")


def test_cli_writes_files_and_json(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "views"
    text = tmp_path / "code.c"
    text.write_text(TEXT * 5, encoding="utf-8")
    proc = genbot_here("inspect", str(model_dir), "--text", str(text), "--find", "bracket-depth",
                  "--surprise", "--gates", "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["discovery"]["feature"] == "bracket-depth" and len(report["discovery"]["top"]) == 5
    assert sorted(Path(p).name for p in report["files"]) == sorted(
        ["unit.png", "unit.html", "surprise.png", "surprise.html", "gates.png"]
    )
    proc = genbot_here(
        "inspect", str(model_dir), "--prompt", "if (x) {\\n}", "--layer", "1", "--unit", "3", "--kind", "c"
    )
    assert proc.returncode == 0, proc.stderr
    assert "showing layer 1 c unit 3 (given)" in proc.stdout and "unit.png" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --text FILE and --prompt TEXT"),
        (["--prompt", "ab", "--layer", "5"], "layer must be 0..1"),
        (["--prompt", "ab", "--unit", "-1"], "unit must be 0..31"),
        (["--prompt", "ab", "--find", "depth"], "unknown feature 'depth'"),
        (["--prompt", "ab", "--find", "quotes"], "never changes"),
        (["--prompt", ""], "empty"),
        (["--text", "missing.txt"], "no such file"),
    ],
)
def test_cli_bad_inputs_exit_2_with_a_message(model_dir: Path, args: list[str], message: str) -> None:
    proc = genbot_here("inspect", str(model_dir), *args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_a_too_long_text(model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("a" * 20_001, encoding="utf-8")
    proc = genbot_here("inspect", str(model_dir), "--text", str(path))
    assert proc.returncode == 2 and "at most 20,000" in proc.stderr


def test_repl_inspect(plugins_dir: Path, tmp_path: Path) -> None:
    script = "/inspect --find line-position ROMEO:\\nthe night\\nJULIET:\\nthe day\n/inspect\n/inspect --find nope x\n"
    entry = [sys.executable, "-c", "from genbot.frontends.cli import main; main()", "repl"]
    proc = subprocess.run(entry, input=script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "units tracking line-position" in proc.stdout
    pngs = [line.split("wrote ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("wrote ")]
    assert pngs and all(Path(p).is_file() for p in pngs)
    assert str(tmp_path / "data" / "inspect") in pngs[0]
    assert "error: /inspect needs a text" in proc.stdout
    assert "error: unknown feature 'nope'" in proc.stdout

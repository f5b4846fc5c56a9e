"""Plugin discovery and the model registry, with real model folders written to tmp_path."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genbot.config import Settings, load_settings
from genbot.engine.registry import GeneratorEntry, ModelRegistry, build_registry
from genbot.errors import UnknownModel
from genbot.networks.card import Architecture, ModelCard, Weights
from genbot.networks.charrnn import CharRNN, CharRNNConfig
from genbot.networks.checkpoint import CARD_FILE, load_model, save_model
from genbot.networks.vocab import Vocab
from genbot.plugins import call_each, load_plugins

GOOD_PLUGIN_PY = """
from pathlib import Path
from genbot.hookspecs import GeneratorSpec, hookimpl

@hookimpl
def register_generators(register):
    register(GeneratorSpec(Path(__file__).parent))
"""


def make_model_folder(folder: Path, name: str | None = None, seed: int = 0) -> Path:
    """A tiny, valid model folder (1-layer GRU, 8 hidden units) named after the folder."""
    torch.manual_seed(seed)
    vocab = Vocab.from_text("abc de\n")
    model = CharRNN(CharRNNConfig(vocab_size=len(vocab), cell="gru", layers=1, hidden=8, embedding=4))
    card = ModelCard(
        name=name or folder.name,
        description="test model",
        architecture=Architecture(vocab_size=len(vocab)),
        weights=Weights(sha256="filled in by save_model"),
    )
    save_model(folder, model, vocab, card)
    return folder


def settings_for(plugins_dir: Path, **overrides: object) -> Settings:
    """Settings pointing at ``plugins_dir`` (no config file)."""
    return Settings(plugins_dir=plugins_dir, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """Two good folders, one good folder with code, and one broken folder of each kind."""
    root = tmp_path / "plugins"
    make_model_folder(root / "alpha")
    make_model_folder(root / "beta", seed=1)
    make_model_folder(root / "coded")
    (root / "coded" / "plugin.py").write_text(GOOD_PLUGIN_PY)

    (make_model_folder(root / "no_weights") / "model.safetensors").unlink()

    corrupt = make_model_folder(root / "corrupt") / "model.safetensors"
    blob = bytearray(corrupt.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(blob))

    card_path = make_model_folder(root / "wrong_shape") / CARD_FILE
    card = ModelCard.read(card_path)
    bigger = card.architecture.model_copy(update={"hidden": 16})
    card_path.write_text(card.model_copy(update={"architecture": bigger}).to_toml())

    make_model_folder(root / "crashes")
    (root / "crashes" / "plugin.py").write_text("raise RuntimeError('boom at import')\n")

    make_model_folder(root / "hook_raises")
    (root / "hook_raises" / "plugin.py").write_text(
        "from genbot.hookspecs import hookimpl\n\n@hookimpl\ndef register_generators(register):\n"
        "    raise ValueError('no generators today')\n"
    )
    (root / "not_a_plugin").mkdir()  # no plugin.toml, no plugin.py: ignored
    return root


def test_good_folders_load_and_bad_ones_are_skipped_with_reasons(
    plugins_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="genbot.plugins"):
        registry = build_registry(settings_for(plugins_dir))
    assert registry.names() == ["alpha", "beta", "coded"]
    errors = {e.name: e.error for e in registry.list() if e.status == "failed"}
    assert set(errors) == {"no_weights", "corrupt", "wrong_shape", "crashes", "hook_raises"}
    assert "missing weights file" in str(errors["no_weights"])
    assert "sha256 does not match" in str(errors["corrupt"])
    assert "has shape" in str(errors["wrong_shape"])
    assert errors["crashes"] == "RuntimeError: boom at import"
    assert errors["hook_raises"] == "ValueError: no generators today"
    for name, error in errors.items():  # every skip is logged with its reason
        assert any(name in r.getMessage() and str(error) in r.getMessage() for r in caplog.records), name


def test_loaded_entries_are_ready_to_serve(plugins_dir: Path) -> None:
    registry = build_registry(settings_for(plugins_dir, plugins_enabled=["alpha", "coded"]))
    entry = registry.get("alpha")
    assert entry.status == "loaded" and entry.error is None
    assert entry.source == f"bundled:{plugins_dir / 'alpha'}"
    assert entry.loaded is not None and entry.card == entry.loaded.card
    model = entry.loaded.network
    assert not model.training
    assert all(p.device.type == "cpu" and not p.requires_grad for p in model.parameters())
    assert registry.get("coded").source == f"bundled:{plugins_dir / 'coded'}"


def test_failed_and_unknown_names_raise_unknown_model(plugins_dir: Path) -> None:
    registry = build_registry(settings_for(plugins_dir))
    for name in ("corrupt", "nope"):
        with pytest.raises(UnknownModel, match="available: alpha, beta, coded"):
            registry.get(name)


def test_failed_entry_keeps_a_readable_card(plugins_dir: Path) -> None:
    registry = build_registry(settings_for(plugins_dir, plugins_enabled=["corrupt"]))
    [entry] = registry.list()
    assert entry.status == "failed" and entry.loaded is None
    assert entry.card is not None and entry.card.description == "test model"


def test_plugins_enabled_restricts_what_loads(
    plugins_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBOT_PLUGINS_DIR", str(plugins_dir))
    monkeypatch.setenv("GENBOT_PLUGINS", "beta,crashes,ghost")
    with caplog.at_level(logging.WARNING, logger="genbot.plugins"):
        registry = build_registry(load_settings())
    assert [(e.name, e.status) for e in registry.list()] == [("beta", "loaded"), ("crashes", "failed")]
    assert any("ghost" in r.getMessage() for r in caplog.records)


def test_misspelt_hook_is_a_failure(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "plugins" / "typo")
    (folder / "plugin.py").write_text(GOOD_PLUGIN_PY.replace("def register_generators", "def register_generator"))
    registry = build_registry(settings_for(tmp_path / "plugins"))
    [entry] = registry.list()
    assert entry.status == "failed" and "unknown hook 'register_generator'" in str(entry.error)


def test_missing_plugins_folder_is_not_fatal(tmp_path: Path) -> None:
    assert build_registry(settings_for(tmp_path / "absent")).list() == []


@pytest.fixture
def installed_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site folder on sys.path holding two installed distributions with ``genbot`` entry points."""
    site = tmp_path / "site"
    model = make_model_folder(tmp_path / "packaged" / "poetry", seed=3)
    suffix = tmp_path.name.replace("-", "_")  # module names unique to this test
    good, bad = f"genbot_ext_good_{suffix}", f"genbot_ext_bad_{suffix}"
    _write_dist(site, "genbot-ext-good", f"extra = {good}")
    (site / f"{good}.py").write_text(
        "from genbot.hookspecs import hookimpl\n\n@hookimpl\ndef register_generators(register):\n"
        f"    register({str(model)!r})\n"
    )
    _write_dist(site, "genbot-ext-bad", f"broken = {bad}")
    (site / f"{bad}.py").write_text("import module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in (good, bad):
        sys.modules.pop(name, None)


def _write_dist(site: Path, dist: str, entry: str) -> None:
    """An installed distribution's metadata, as pip would leave it."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[genbot]\n{entry}\n")


def test_entry_point_plugins_load_and_a_broken_one_is_skipped(installed_packages: Path, tmp_path: Path) -> None:
    registry = build_registry(settings_for(tmp_path / "no_bundled"))
    entries = {e.name: e for e in registry.list()}
    assert entries["poetry"].status == "loaded"
    assert entries["poetry"].source == "entrypoint:genbot-ext-good"
    assert entries["broken"].status == "failed"
    assert entries["broken"].source == "entrypoint:genbot-ext-bad"
    assert "ModuleNotFoundError" in str(entries["broken"].error)


def test_entry_points_obey_plugins_enabled(installed_packages: Path, tmp_path: Path) -> None:
    plugins = load_plugins(settings_for(tmp_path / "no_bundled", plugins_enabled=["extra"]))
    assert "extra" in plugins.sources and not plugins.failures


def test_replace_swaps_the_model_and_old_holders_keep_theirs(plugins_dir: Path) -> None:
    registry = build_registry(settings_for(plugins_dir, plugins_enabled=["alpha"]))
    old = registry.get("alpha")
    retrained = load_model(make_model_folder(plugins_dir.parent / "alpha_v2", name="alpha", seed=7))
    retrained.network.train()
    new = registry.replace("alpha", retrained)
    assert registry.get("alpha") is new and new.loaded is retrained
    assert not retrained.network.training  # prepared for serving
    assert old.loaded is not None and old.loaded is not retrained  # a running stream still holds this one
    ids = torch.tensor([0])
    old.loaded.network.step(ids, old.loaded.network.initial_state(1))
    with pytest.raises(UnknownModel):
        registry.replace("ghost", retrained)


def test_replace_revives_a_failed_entry(plugins_dir: Path) -> None:
    registry = build_registry(settings_for(plugins_dir, plugins_enabled=["corrupt"]))
    fixed = load_model(make_model_folder(plugins_dir.parent / "corrupt_fixed", name="corrupt"))
    assert registry.replace("corrupt", fixed).status == "loaded"
    assert registry.names() == ["corrupt"]


def test_a_loaded_name_is_not_taken_over(plugins_dir: Path) -> None:
    first = build_registry(settings_for(plugins_dir, plugins_enabled=["alpha"])).get("alpha")
    registry = ModelRegistry([first])
    assert not registry.add(GeneratorEntry.failed("alpha", "bundled:elsewhere", "broken"))
    assert not registry.add(GeneratorEntry.ok(first.loaded, "bundled:elsewhere"))  # type: ignore[arg-type]
    assert registry.get("alpha") is first


def test_other_hooks_are_called_per_plugin_and_a_raising_one_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    for name, body in [("adds", "cli.append('hello')"), ("raises", "raise KeyError('nope')")]:
        (root / name).mkdir(parents=True)
        (root / name / "plugin.py").write_text(
            f"from genbot.hookspecs import hookimpl\n\n@hookimpl\ndef register_commands(cli):\n    {body}\n"
        )
    plugins = load_plugins(settings_for(root))
    commands: list[str] = []
    call_each(plugins, "register_commands", cli=commands)
    assert commands == ["hello"]
    assert [(f.name, f.error) for f in plugins.failures] == [("raises", "KeyError: 'nope'")]

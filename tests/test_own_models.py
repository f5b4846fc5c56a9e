"""Your own models end to end: add a trained folder, serve it everywhere, export it, remove it, train a new one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genbot.config import ApiSettings, load_settings
from genbot.engine.registry import build_registry
from genbot.errors import CheckpointError, InvalidRequest, NotFound
from genbot.networks.card import ModelCard
from genbot.service import GenbotService, GenerationRequest
from tests.helpers import api_server, client, genbot_here, write_model_folder

FAST = {"block": 32, "batch": 8, "eval_every": 5, "hidden": 32, "layers": 1}


async def text_of(service: GenbotService, model: str, seed: int = 3) -> str:
    """Twenty characters of ``model`` at a fixed seed."""
    gen = await service.generate(GenerationRequest(model=model, prompt="RO", length=20, seed=seed))
    return (await gen.result()).output


@pytest.fixture
def trained(tmp_path: Path, corpus_text: str) -> Path:
    """A folder as ``genbot train --out`` leaves it: model files plus its checkpoint folder."""
    folder = write_model_folder(tmp_path / "runs", "whatever-name", corpus_text, seed=5)
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "state.safetensors").write_bytes(b"resume state, not part of the model")
    return folder


async def test_an_added_folder_is_served_by_every_front_end_and_survives_a_restart(
    plugins_dir: Path, trained: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    async with GenbotService(settings) as service:
        row = await service.versions.add_model("mine", trained, description="my own plays")
        assert row.version == 1 and row.active
        assert "mine" in await service._version_watcher.sync()  # type: ignore[union-attr]  # what the poll does
        live = await text_of(service, "mine")
    folder = settings.data_dir / "models" / "mine" / "v1"
    card = ModelCard.read(folder / "plugin.toml")
    assert (card.name, card.description) == ("mine", "my own plays")
    assert (folder / "README.md").is_file() and not (folder / "checkpoint").exists()
    async with api_server(ApiSettings()) as (url, service), client(url) as c:  # a fresh process's view
        listed = {g["name"]: g["status"] for g in (await c.get("/v1/generators")).json()["generators"]}
        reply = (await c.post("/v1/generate", json={"model": "mine", "prompt": "RO", "length": 20, "seed": 3})).json()
    assert listed == {"alpha": "loaded", "beta": "loaded", "mine": "loaded"}
    assert reply["text"] == live and reply["version"] == 1


async def test_export_writes_a_plugin_another_genbot_loads(
    plugins_dir: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with GenbotService(load_settings()) as service:
        await service.versions.add_model("mine", trained)
        await service._version_watcher.sync()  # type: ignore[union-attr]
        expected = await text_of(service, "mine")
        exported = await service.versions.export_model("mine", tmp_path / "elsewhere" / "mine")
        bundled = await service.versions.export_model("alpha", tmp_path / "elsewhere" / "alpha", version=1)
        with pytest.raises(InvalidRequest, match="not an empty folder"):
            await service.versions.export_model("mine", tmp_path / "elsewhere" / "mine")
        with pytest.raises(NotFound, match="no version 9"):
            await service.versions.export_model("mine", tmp_path / "x", version=9)
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "model.safetensors", "plugin.toml", "vocab.json"]
    assert (bundled / "plugin.toml").is_file()
    # Another genbot: its own data folder and a plugins folder holding only the export.
    monkeypatch.setenv("GENBOT_DATA_DIR", str(tmp_path / "other-data"))
    monkeypatch.setenv("GENBOT_PLUGINS_DIR", str(tmp_path / "elsewhere"))
    other = load_settings()
    registry = build_registry(other)
    assert {e.name: (e.status, e.source.split(":")[0]) for e in registry.list()} == {
        "alpha": ("loaded", "bundled"),
        "mine": ("loaded", "bundled"),
    }
    async with GenbotService(other, registry) as service:
        assert await text_of(service, "mine") == expected


async def test_remove_forgets_a_model_and_its_folders(plugins_dir: Path, trained: Path) -> None:
    settings = load_settings()
    async with GenbotService(settings, serving=False) as service:
        await service.versions.add_model("mine", trained)
        gone = await service.versions.remove_model("mine")
        assert [v.version for v in gone] == [1]
        assert await service.versions.list("mine") == []
        with pytest.raises(NotFound, match="no model called 'mine'"):
            await service.versions.remove_model("mine")
        with pytest.raises(InvalidRequest, match="bundled"):
            await service.versions.remove_model("alpha")
        await service.versions.add_model("mine", trained)  # the name is free again
    assert sorted(p.name for p in (settings.data_dir / "models" / "mine").iterdir()) == ["v1"]


async def test_add_refuses_taken_names_bad_names_and_folders_that_do_not_load(
    plugins_dir: Path, trained: Path, tmp_path: Path
) -> None:
    settings = load_settings()
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    async with GenbotService(settings, serving=False) as service:
        with pytest.raises(InvalidRequest, match="already exists"):
            await service.versions.add_model("alpha", trained)
        with pytest.raises(InvalidRequest, match="invalid model name"):
            await service.versions.add_model("../up", trained)
        with pytest.raises(CheckpointError, match="not a model folder"):
            await service.versions.add_model("empty", tmp_path)
        with pytest.raises(CheckpointError):
            await service.versions.add_model("broken", broken)
        await service.versions.add_model("mine", trained)
        with pytest.raises(InvalidRequest, match="already exists"):
            await service.versions.add_model("mine", trained)
        assert [v.model for v in await service.versions.list("broken")] == []
    assert sorted(p.name for p in (settings.data_dir / "models").iterdir()) == ["mine"]


@pytest.mark.slow
async def test_a_brand_new_model_trained_from_scratch_through_the_api_job_route(sqlite_jobs_env: str) -> None:
    settings = load_settings()
    body = {"model": "newbie", "corpus": "plays", "source": "scratch", "steps": 6, "options": FAST}
    async with api_server(ApiSettings(unkeyed_admin=True)) as (url, service), client(url) as c:
        refused = await c.post("/v1/admin/jobs", json=body | {"model": "Bad Name"})
        unknown = await c.post("/v1/admin/jobs", json=body | {"source": "active", "options": {"block": 32}})
        queued = await c.post("/v1/admin/jobs", json=body)
        assert queued.status_code == 201, queued.text
        worker = subprocess.run(
            [sys.executable, "-m", "genbot", "worker", "--once"], capture_output=True, text=True, timeout=300
        )
        assert worker.returncode == 0, worker.stderr
        job = (await c.get(f"/v1/admin/jobs/{queued.json()['id']}")).json()
        assert job["status"] == "succeeded", job
        await service._version_watcher.sync()  # type: ignore[union-attr]
        reply = await c.post("/v1/generate", json={"model": "newbie", "prompt": "RO", "length": 15})
    assert refused.status_code == 400 and "invalid model name" in refused.text
    assert unknown.status_code == 404 and "newbie" in unknown.text  # only --from scratch makes a new model
    assert reply.status_code == 200 and len(reply.json()["text"]) == 15
    async with GenbotService(settings, serving=False) as service:
        assert {v.version: v.active for v in await service.versions.list("newbie")} == {1: True}


async def test_discord_admin_retrain_from_scratch_queues_a_new_model(sqlite_jobs_env: str) -> None:
    from genbot.testing.fake_discord import INTEGER, SUBCOMMAND, FakeDiscord
    from tests.helpers import OWNER, callbacks, ephemeral_text, opened_service, opt, running_bot

    def retrain(model: str) -> list[dict[str, object]]:
        options = [opt("model", model), opt("corpus", "plays"), opt("steps", 3, INTEGER), opt("start", "scratch")]
        return [{"type": SUBCOMMAND, "name": "retrain", "options": options}]

    async with FakeDiscord() as fake, opened_service() as service, running_bot(fake, service):
        queued = await fake.slash("admin", retrain("newbie"), member=OWNER)
        refused = await fake.slash("admin", retrain("Bad Name"), member=OWNER)
        await fake.wait_for(lambda: callbacks(fake, queued.token) and ephemeral_text(fake, refused.token))
        [job] = await service.jobs.list()
    assert "Queued job #" in str(callbacks(fake, queued.token)[0]["data"])
    assert (job.model, job.args["source"], job.parent_version) == ("newbie", "scratch", None)
    assert "invalid model name" in ephemeral_text(fake, refused.token)


def test_the_models_commands_add_export_and_remove(plugins_dir: Path, trained: Path, tmp_path: Path) -> None:
    added = genbot_here("models", "add", "mine", str(trained), "--description", "my own plays")
    assert added.returncode == 0, added.stderr
    assert "added model mine: version 1 is active" in added.stdout
    assert "my own plays" in genbot_here("models").stdout
    again = genbot_here("models", "add", "mine", str(trained))
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "already exists" in again.stderr
    not_a_model = genbot_here("models", "add", "other", str(tmp_path))
    assert not_a_model.returncode == 2 and "not a model folder" in not_a_model.stderr

    exported = genbot_here("models", "export", "mine", str(tmp_path / "out" / "mine"), "--version", "1")
    assert exported.returncode == 0, exported.stderr
    assert {p.name for p in (tmp_path / "out" / "mine").iterdir()} >= {"plugin.toml", "vocab.json", "README.md"}
    no_version = genbot_here("models", "export", "mine", str(tmp_path / "out" / "v9"), "--version", "9")
    assert no_version.returncode == 2 and "no version 9" in no_version.stderr

    removed = genbot_here("models", "remove", "mine")
    assert removed.returncode == 0 and "removed model mine (1 version)" in removed.stdout
    bundled = genbot_here("models", "remove", "alpha")
    assert bundled.returncode == 2 and "bundled" in bundled.stderr

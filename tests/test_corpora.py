"""Corpora: ``genbot corpus add|list|show|remove`` in a real process, and through the service."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest

from genbot.config import load_settings
from genbot.errors import CorpusError, NotFound
from genbot.service import GenbotService
from genbot.storage.migrate import upgrade_database
from tests.helpers import genbot_here


def _write(folder: Path, name: str, data: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _stored_folders(service: GenbotService) -> list[str]:
    """Everything under data_dir/corpora, hidden staging folders included."""
    root = service.settings.data_dir / "corpora"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _captions_folder(folder: Path, *, images: list[dict[str, object]] | None = None) -> Path:
    """A minimal COCO captions folder: captions.json, two images under images/, an attribution file."""
    (folder / "images").mkdir(parents=True)
    _write(folder / "images", "1.jpg", b"\xff\xd8\xff fake jpeg 1")
    _write(folder / "images", "2.jpg", b"\xff\xd8\xff fake jpeg 2")
    _write(folder, "ATTRIBUTION.txt", "photos: CC BY 2.0\n")
    data = {
        "images": images if images is not None else [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "a cat on a mat"},
            {"id": 11, "image_id": 2, "caption": "two dogs play"},
        ],
    }
    _write(folder, "captions.json", json.dumps(data))
    return folder


# ----- through the service ---------------------------------------------------------------------------


async def test_add_show_list_remove(service: GenbotService, tmp_path: Path) -> None:
    first = _write(tmp_path, "a.txt", "ROMEO:\nhello café\n")
    second = _write(tmp_path, "b.txt", "JULIET:\nbye")
    row = await service.corpora.add("plays", [first, second], licence="CC0", description="two scenes")
    expected = first.read_bytes() + second.read_bytes()  # concatenated in the order given, byte for byte
    stored = Path(row.path)
    assert stored == service.settings.data_dir / "corpora" / "plays" / "input.txt"
    assert stored.read_bytes() == expected
    assert row.sha256 == hashlib.sha256(expected).hexdigest()
    text = expected.decode("utf-8")
    assert (row.size_bytes, row.chars, row.charset) == (len(expected), len(text), "".join(sorted(set(text))))
    assert (row.kind, row.licence, row.description) == ("text", "CC0", "two scenes")
    assert await service.corpora.get("plays") == row
    assert [c.name for c in await service.corpora.list()] == ["plays"]
    assert _stored_folders(service) == ["plays"]  # no staging left-overs

    assert await service.corpora.remove("plays") == row
    assert await service.corpora.list() == []
    assert _stored_folders(service) == []
    with pytest.raises(NotFound, match="no corpus named 'plays'"):
        await service.corpora.get("plays")
    with pytest.raises(NotFound):
        await service.corpora.remove("plays")


async def test_file_order_matters_and_same_content_is_detected(service: GenbotService, tmp_path: Path) -> None:
    a, b = _write(tmp_path, "a.txt", "first part\n"), _write(tmp_path, "b.txt", "second part\n")
    await service.corpora.add("ab", [a, b])
    await service.corpora.add("ba", [b, a])  # other order, other content: accepted
    copy = _write(tmp_path, "copy.txt", a.read_text() + b.read_text())
    with pytest.raises(CorpusError, match="already registered as corpus 'ab'"):
        await service.corpora.add("again", [copy])
    with pytest.raises(CorpusError, match="corpus named 'ab' already exists"):
        await service.corpora.add("ab", [_write(tmp_path, "new.txt", "new text\n")])
    assert [c.name for c in await service.corpora.list()] == ["ab", "ba"]
    assert _stored_folders(service) == ["ab", "ba"]


async def test_parallel_adds_of_one_text_register_it_once(service: GenbotService, tmp_path: Path) -> None:
    """Eight adds of the same content under eight names at once: one corpus, seven clear refusals."""
    text = "parallel corpus text\n" * 200
    files = [_write(tmp_path, f"c{i}.txt", text) for i in range(8)]
    results = await asyncio.gather(
        *(service.corpora.add(f"copy{i}", [f]) for i, f in enumerate(files)), return_exceptions=True
    )
    added = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, CorpusError)]
    assert (len(added), len(refused)) == (1, 7), results
    assert all("already registered as corpus" in str(e) for e in refused)
    assert [c.name for c in await service.corpora.list()] == [added[0].name]
    assert _stored_folders(service) == [added[0].name]


async def test_parallel_adds_of_one_name_keep_the_first(service: GenbotService, tmp_path: Path) -> None:
    """Six different texts under one name at once: one wins, its files are the stored ones."""
    files = [_write(tmp_path, f"n{i}.txt", f"text number {i}\n" * 50) for i in range(6)]
    results = await asyncio.gather(*(service.corpora.add("same", [f]) for f in files), return_exceptions=True)
    added = [r for r in results if not isinstance(r, BaseException)]
    assert len(added) == 1 and all(isinstance(r, CorpusError) for r in results if r is not added[0]), results
    [row] = await service.corpora.list()
    assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256 == added[0].sha256


def test_two_processes_adding_one_text_register_it_once(plugins_dir: Path, tmp_path: Path, db_url: str) -> None:
    """Two `genbot corpus add` processes on one database, same content, two names: one succeeds."""
    text = "two processes, one text\n" * 2000
    files = [_write(tmp_path, f"p{i}.txt", text) for i in range(4)]
    env = os.environ | {"GENBOT_DATABASE_URL": db_url}
    asyncio.run(upgrade_database(db_url))
    procs = [_spawn_genbot(env, "corpus", "add", f"proc{i}", str(f)) for i, f in enumerate(files)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2, 2, 2], outcomes
    out, err = _spawn_genbot(env, "corpus", "list", "--json").communicate(timeout=120)
    assert len(out.splitlines()) == 1, (out, err)


def _spawn_genbot(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start the real ``genbot`` entry point without waiting for it."""
    code = "from genbot.frontends.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True, stdout=PIPE, stderr=PIPE)


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "Upper", "", "-dash", "x" * 65, "sp ace", "é"])
async def test_bad_names_are_refused(service: GenbotService, tmp_path: Path, name: str) -> None:
    good = _write(tmp_path, "ok.txt", "fine text\n")
    with pytest.raises(CorpusError, match="invalid corpus name"):
        await service.corpora.add(name, [good])
    assert await service.corpora.list() == []
    assert _stored_folders(service) == []
    assert not (tmp_path / "x").exists() and not (service.settings.data_dir / "x").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n\t\n", "only whitespace"),
        (b"text\x00with NUL" * 10, "binary"),
        (b"\x01\x02\x03\x04 control soup \x05\x06\x07\x08", "binary"),
        (b"caf\xe9 latin-1 text", "not UTF-8"),
    ],
)
async def test_bad_files_are_refused_and_nothing_is_stored(
    service: GenbotService, tmp_path: Path, content: bytes, message: str
) -> None:
    good = _write(tmp_path, "good.txt", "good text\n")
    bad = _write(tmp_path, "bad.txt", content)
    with pytest.raises(CorpusError, match=message):
        await service.corpora.add("mixed", [good, bad])
    assert await service.corpora.list() == []
    assert _stored_folders(service) == []


async def test_missing_files_and_folders_are_refused(service: GenbotService, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        await service.corpora.add("gone", [tmp_path / "missing.txt"])
    with pytest.raises(CorpusError, match="--kind captions"):
        await service.corpora.add("dir", [tmp_path])
    with pytest.raises(CorpusError, match="no corpus files"):
        await service.corpora.add("none", [])
    with pytest.raises(CorpusError, match="unknown corpus kind"):
        await service.corpora.add("odd", [tmp_path], kind="audio")
    assert await service.corpora.list() == []


async def test_size_limit_comes_from_config(
    plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GENBOT_CORPUS_MAX_BYTES", "100")
    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    await upgrade_database(db_url)
    async with GenbotService(load_settings()) as svc:
        half = _write(tmp_path, "half.txt", "x" * 60)
        await svc.corpora.add("small", [half])  # 60 bytes: fine on its own
        with pytest.raises(CorpusError, match="120 bytes, over the 100-byte limit"):
            await svc.corpora.add("big", [half, _write(tmp_path, "other.txt", "y" * 60)])
        assert [c.name for c in await svc.corpora.list()] == ["small"]
        assert _stored_folders(svc) == ["small"]


async def test_captions_folder_is_validated_and_copied(service: GenbotService, tmp_path: Path) -> None:
    source = _captions_folder(tmp_path / "coco")
    row = await service.corpora.add("coco", [source], kind="captions", licence="CC BY 4.0")
    stored = Path(row.path)
    assert stored == service.settings.data_dir / "corpora" / "coco"
    copied = sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file())
    assert copied == ["ATTRIBUTION.txt", "captions.json", "images/1.jpg", "images/2.jpg"]
    assert (stored / "images" / "2.jpg").read_bytes() == (source / "images" / "2.jpg").read_bytes()
    assert row.kind == "captions" and row.chars == len("a cat on a mat\ntwo dogs play")
    assert row.size_bytes == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    with pytest.raises(CorpusError, match="already registered as corpus 'coco'"):
        await service.corpora.add("coco2", [source], kind="captions")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "../../secret.jpg"}], "not in the folder"),
        ([{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "3.jpg"}], "'3.jpg' is not in the folder"),
        ([{"id": "one", "file_name": "1.jpg"}], "integer 'id'"),
        ([], "non-empty 'images'"),
        ([{"id": 1, "file_name": "1.jpg"}], "image_id"),  # annotation 11 names image 2, not listed
    ],
)
async def test_bad_captions_folders_are_refused(
    service: GenbotService, tmp_path: Path, images: list[dict[str, object]], message: str
) -> None:
    source = _captions_folder(tmp_path / "coco", images=images)
    with pytest.raises(CorpusError, match=message):
        await service.corpora.add("coco", [source], kind="captions")
    assert await service.corpora.list() == []
    assert _stored_folders(service) == []


async def test_captions_need_one_folder_with_captions_json(service: GenbotService, tmp_path: Path) -> None:
    source = _captions_folder(tmp_path / "coco")
    with pytest.raises(CorpusError, match="one folder"):
        await service.corpora.add("coco", [source / "captions.json"], kind="captions")
    (source / "captions.json").unlink()
    with pytest.raises(CorpusError, match=r"no captions\.json"):
        await service.corpora.add("coco", [source], kind="captions")
    _write(source, "captions.json", "{not json")
    with pytest.raises(CorpusError, match="not valid JSON"):
        await service.corpora.add("coco", [source], kind="captions")
    assert _stored_folders(service) == []


async def test_an_orphan_folder_from_a_crash_is_replaced(service: GenbotService, tmp_path: Path) -> None:
    orphan = service.settings.data_dir / "corpora" / "plays"
    orphan.mkdir(parents=True)
    _write(orphan, "input.txt", "stale text from before a crash\n")
    row = await service.corpora.add("plays", [_write(tmp_path, "a.txt", "fresh text\n")])
    assert Path(row.path).read_text() == "fresh text\n"


# ----- the command line, in a real process ----------------------------------------------------------


def test_cli_add_list_show_remove(plugins_dir: Path, tmp_path: Path) -> None:
    first, second = _write(tmp_path, "a.txt", "ROMEO:\nhi\n"), _write(tmp_path, "b.txt", "JULIET:\nho\n")
    proc = genbot_here("corpus", "add", "plays", str(first), str(second), "--licence", "CC0", "--description", "scenes")
    assert proc.returncode == 0, proc.stderr
    assert "added corpus plays (text): 21 bytes" in proc.stdout
    [listed] = [json.loads(line) for line in genbot_here("corpus", "list", "--json").stdout.splitlines()]
    assert (listed["name"], listed["licence"], listed["description"]) == ("plays", "CC0", "scenes")
    assert listed["sha256"] == hashlib.sha256(first.read_bytes() + second.read_bytes()).hexdigest()
    shown = json.loads(genbot_here("corpus", "show", "plays", "--json").stdout)
    assert shown == listed
    assert "plays" in genbot_here("corpus", "list").stdout
    assert "charset:" in genbot_here("corpus", "show", "plays").stdout

    proc = genbot_here("corpus", "add", "copy", str(first), str(second))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"error: the same content is already registered as corpus 'plays' (sha256 {listed['sha256'][:12]}…)"
    )

    assert "removed corpus plays" in genbot_here("corpus", "remove", "plays").stdout
    assert genbot_here("corpus", "list").stdout == ""
    proc = genbot_here("corpus", "show", "plays")
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: no corpus named 'plays'")


def test_cli_bad_input_is_one_error_line(plugins_dir: Path, tmp_path: Path) -> None:
    binary = _write(tmp_path, "blob.bin", bytes(range(256)) * 4)
    for args, message in [
        (("../x", str(binary)), "invalid corpus name '../x'"),
        (("blob", str(binary)), "looks like a binary file"),
        (("blob", str(tmp_path / "nope.txt")), "no such file"),
    ]:
        proc = genbot_here("corpus", "add", *args)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith("error: ") and message in line
        assert "Traceback" not in proc.stderr
    assert genbot_here("corpus", "list").stdout == ""

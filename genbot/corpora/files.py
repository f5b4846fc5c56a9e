"""Registering corpora: validate the files, copy them into the data folder, record them.

A text corpus is one or more UTF-8 files, concatenated byte for byte in the order given (like
``cat``), stored as ``data_dir/corpora/<name>/input.txt``. A captions corpus is a folder with a
COCO-format ``captions.json`` and the images it names, copied as a whole.

Order of work, so a failure at any step leaves nothing behind and two admins adding the same
name at once cannot clobber each other's files:

1. check the name and every file (nothing is written if anything is wrong);
2. stage the copy in a hidden temporary folder under ``data_dir/corpora``;
3. insert the row: the unique name in the database decides who owns the name;
4. rename the staged folder into place (one atomic rename). If that fails, the row goes again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genbot.config import Settings
from genbot.corpora import store as store
from genbot.corpora.store import CorpusRow, NewCorpus
from genbot.errors import CorpusError, NotFound
from genbot.storage.db import Database
from genbot.storage.tables import CorpusKind
from genbot.training.data import check_text, read_corpus

CORPORA_DIR = "corpora"
TEXT_FILE = "input.txt"
CAPTIONS_FILE = "captions.json"
# Lower-case, starts with a letter or digit: safe as a folder name everywhere, never "." or "..".
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class PreparedCorpus:
    """A validated corpus, copied into a staging folder, not yet recorded."""

    staged: Path  # temporary folder holding the files
    relative_path: str  # what the row's path points at, inside the final folder ("input.txt" or ".")
    sha256: str
    size_bytes: int
    chars: int
    charset: str


def check_name(name: str) -> str:
    """``name`` if it is a valid corpus name; CorpusError saying what is allowed otherwise."""
    if not NAME_PATTERN.fullmatch(name):
        raise CorpusError(
            f"invalid corpus name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def corpora_root(settings: Settings) -> Path:
    """The folder every registered corpus lives under."""
    return settings.data_dir / CORPORA_DIR


def corpus_folder(settings: Settings, name: str) -> Path:
    """The folder of corpus ``name`` (the name is checked, so it cannot point elsewhere)."""
    return corpora_root(settings) / check_name(name)


async def add_corpus_files(
    db: Database,
    settings: Settings,
    name: str,
    paths: list[Path],
    kind: str = "text",
    licence: str = "",
    description: str = "",
) -> CorpusRow:
    """Validate, copy and record a corpus; raises CorpusError and stores nothing on any problem."""
    check_name(name)
    corpus_kind = _kind(kind)
    if await _exists(db, name):
        raise CorpusError(f"a corpus named {name!r} already exists (remove it first: genbot corpus remove {name})")
    prepare = _prepare_text if corpus_kind is CorpusKind.TEXT else _prepare_captions
    prepared = await asyncio.to_thread(prepare, [Path(p) for p in paths], settings.corpus_max_bytes, settings)
    try:
        await _refuse_duplicate(db, prepared.sha256)
        final = corpus_folder(settings, name)
        row = await store.add_corpus(db, _record(name, corpus_kind, final, prepared, licence, description))
        try:
            await asyncio.to_thread(_publish, prepared.staged, final)
        except OSError as e:
            await store.remove_corpus(db, name)
            raise CorpusError(f"cannot store the corpus in {final}: {e}") from e
        return row
    finally:
        shutil.rmtree(prepared.staged, ignore_errors=True)


async def remove_corpus_files(db: Database, settings: Settings, name: str) -> CorpusRow:
    """Delete a corpus's row, then its files; raises NotFound if there is no such corpus."""
    check_name(name)
    # The row first: once it is gone nobody can start using the corpus; left-over files are
    # only an orphan folder, which the next add of that name replaces.
    row = await store.remove_corpus(db, name)
    await asyncio.to_thread(lambda: shutil.rmtree(corpus_folder(settings, name), ignore_errors=True))
    return row


def corpus_file(row: CorpusRow) -> Path:
    """The file (text) or folder (captions) a trainer reads."""
    return Path(row.path)


# ----- validation and staging (blocking file work: run in a thread) ----------------------------


def _prepare_text(paths: list[Path], max_bytes: int, settings: Settings) -> PreparedCorpus:
    """Check every file, concatenate them in order, stage ``input.txt``."""
    if not paths:
        raise CorpusError("no corpus files given")
    _check_total_size(paths, max_bytes)
    texts = [_read_text_file(path, max_bytes) for path in paths]
    text = "".join(texts)
    check_text(text, "the concatenated corpus")
    data = text.encode("utf-8")
    staged = _staging_folder(settings)
    (staged / TEXT_FILE).write_bytes(data)
    return PreparedCorpus(staged, TEXT_FILE, hashlib.sha256(data).hexdigest(), len(data), len(text), _charset(text))


def _read_text_file(path: Path, max_bytes: int) -> str:
    """One validated UTF-8 text file (a folder gets a hint about --kind captions)."""
    if path.is_dir():
        raise CorpusError(f"{path}: is a folder; pass text files, or use --kind captions for a captions folder")
    return read_corpus(path, max_bytes)


def _check_total_size(paths: list[Path], max_bytes: int) -> None:
    """Refuse before reading anything when the files together are over the limit."""
    total = sum(path.stat().st_size for path in paths if path.is_file())
    if total > max_bytes:
        raise CorpusError(
            f"the corpus files hold {total:,} bytes, over the {max_bytes:,}-byte limit (corpus_max_bytes)"
        )


def _prepare_captions(paths: list[Path], max_bytes: int, settings: Settings) -> PreparedCorpus:
    """Check a COCO captions folder and stage a copy of it."""
    if len(paths) != 1 or not paths[0].is_dir():
        raise CorpusError(f"a captions corpus is one folder holding {CAPTIONS_FILE} and the images")
    folder = paths[0]
    files = _folder_files(folder)
    _check_total_size([folder / f for f in files], max_bytes)
    captions = _read_captions(folder, set(files))
    staged = _staging_folder(settings)
    for relative in files:
        (staged / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / relative, staged / relative)
    text = "\n".join(captions)
    return PreparedCorpus(staged, ".", _tree_sha256(staged, files), _size(staged, files), len(text), _charset(text))


def _folder_files(folder: Path) -> list[str]:
    """Every regular file under ``folder``, relative and sorted; symbolic links are refused."""
    files: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise CorpusError(f"{path}: symbolic links are not copied; put the real file in the folder")
        if path.is_file():
            files.append(path.relative_to(folder).as_posix())
    return files


def _read_captions(folder: Path, files: set[str]) -> list[str]:
    """The captions of a valid COCO ``captions.json``; CorpusError naming the first problem."""
    path = folder / CAPTIONS_FILE
    if CAPTIONS_FILE not in files:
        raise CorpusError(f"{folder}: no {CAPTIONS_FILE} (COCO captions format) in the folder")
    try:
        data = json.loads(read_corpus(path))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: not valid JSON ({e})") from e
    images = _image_ids(path, data, files)
    return _captions(path, data, images)


def _image_ids(path: Path, data: Any, files: set[str]) -> set[int]:
    """Ids of the listed images, each of which must be in the folder (or its images/ folder)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"]:
        raise CorpusError(f"{path}: expected an object with a non-empty 'images' list (COCO captions format)")
    ids: set[int] = set()
    for image in data["images"]:
        if not (
            isinstance(image, dict) and isinstance(image.get("id"), int) and isinstance(image.get("file_name"), str)
        ):
            raise CorpusError(f"{path}: every image needs an integer 'id' and a 'file_name'; got {image!r:.100}")
        name = image["file_name"]
        if name not in files and f"images/{name}" not in files:
            raise CorpusError(f"{path}: image {name!r} is not in the folder (nor in its images/ folder)")
        ids.add(image["id"])
    return ids


def _is_str(value: object) -> bool:
    """Whether ``value`` is a non-empty string."""
    return isinstance(value, str) and bool(value)


def _captions(path: Path, data: dict[str, Any], images: set[int]) -> list[str]:
    """The caption texts; each annotation must name a listed image."""
    annotations = data.get("annotations")
    if not isinstance(annotations, list) or not annotations:
        raise CorpusError(f"{path}: expected a non-empty 'annotations' list (COCO captions format)")
    captions: list[str] = []
    for ann in annotations:
        if not (isinstance(ann, dict) and isinstance(ann.get("caption"), str) and ann.get("image_id") in images):
            raise CorpusError(f"{path}: every annotation needs a 'caption' and the 'image_id' of a listed image")
        captions.append(ann["caption"])
    return captions


def _staging_folder(settings: Settings) -> Path:
    """A fresh hidden folder under ``data_dir/corpora`` (same file system: the final rename is atomic)."""
    root = corpora_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))


def _publish(staged: Path, final: Path) -> None:
    """Move the staged folder to ``final``, replacing an orphan folder left by a crash."""
    # The caller holds the name (its row is in the database), so a folder already there is an
    # orphan from a crash between removing a row and deleting its files.
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)


def _record(
    name: str, kind: CorpusKind, final: Path, prepared: PreparedCorpus, licence: str, description: str
) -> NewCorpus:
    """The row for a prepared corpus that will live in ``final``."""
    path = final if prepared.relative_path == "." else final / prepared.relative_path
    return NewCorpus(
        name=name,
        kind=kind,
        path=str(path),
        sha256=prepared.sha256,
        size_bytes=prepared.size_bytes,
        chars=prepared.chars,
        charset=prepared.charset,
        licence=licence,
        description=description,
    )


def _kind(kind: str) -> CorpusKind:
    """``kind`` as a CorpusKind; CorpusError listing the choices otherwise."""
    try:
        return CorpusKind(kind)
    except ValueError:
        raise CorpusError(f"unknown corpus kind {kind!r} (choose text or captions)") from None


async def _exists(db: Database, name: str) -> bool:
    """Whether a corpus called ``name`` is registered."""
    try:
        await store.get_corpus(db, name)
    except NotFound:
        return False
    return True


async def _refuse_duplicate(db: Database, sha256: str) -> None:
    """CorpusError naming the corpus that already holds exactly this content."""
    existing = await store.find_corpus_by_sha(db, sha256)
    if existing is not None:
        raise store.duplicate_content(existing.name, sha256)


def _charset(text: str) -> str:
    """The sorted distinct characters of ``text``."""
    return "".join(sorted(set(text)))


def _tree_sha256(folder: Path, files: list[str]) -> str:
    """One hash for a folder: sha256 over 'file-sha256  relative-path' lines, sorted by path."""
    lines = [f"{hashlib.sha256((folder / f).read_bytes()).hexdigest()}  {f}\n" for f in sorted(files)]
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _size(folder: Path, files: list[str]) -> int:
    """Total bytes of the given files."""
    return sum((folder / f).stat().st_size for f in files)

"""Shared fixtures. Tests never touch the user's real folders: every path is under tmp_path."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from genbot.testing.databases import fresh_postgres_database
from tests.helpers import make_corpus_text, write_model_folder

if TYPE_CHECKING:
    from genbot.service import GenbotService

# Serving and tests use few torch threads: a second busy process makes a 2-thread stepper slow.
torch.set_num_threads(1)


@pytest.fixture
def corpus_text() -> str:
    """Text of a small generated corpus."""
    return make_corpus_text()


@pytest.fixture
def corpus_file(tmp_path: Path, corpus_text: str) -> Path:
    """A small generated corpus written to a UTF-8 file."""
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Keep genbot's data folder and settings inside the test's tmp_path.

    Serving-path measurements (seconds per model, the same for every test on this machine) go to
    one file in pytest's cache folder, shared by the test processes of a run and by later runs,
    so each bundled model is measured once, not once per test process and phase. The cache key
    names the CPU, torch and the genbot cache version, so another machine measures afresh.
    """
    for key in list(os.environ):
        if key.startswith("GENBOT_") and key != "GENBOT_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)  # `genbot serve` in a test must never reach Discord
    monkeypatch.setenv("GENBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GENBOT_ENGINE__PATHS_CACHE", str(_paths_cache(request.config)))


@pytest.fixture(scope="session", autouse=True)
def _native_kernels_built_once(request: pytest.FixtureRequest) -> None:
    """The native kernels (a C compiler's few seconds) build in pytest's cache folder, once per machine."""
    from genbot.networks import native

    native.library(_paths_cache(request.config).parent / "native")


def _paths_cache(config: pytest.Config) -> Path:
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    folder = cache.mkdir("genbot") if cache is not None else Path(config.rootpath, ".pytest_cache", "d", "genbot")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "engine-paths.json"


# ---------------------------------------------------------------------------------------------
# Storage: the `db_url` fixture (owned by the storage layer; genbot/storage, tests/test_storage.py)
# ---------------------------------------------------------------------------------------------

from collections.abc import Iterator  # noqa: E402 (appended section; the top belongs to others)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a blank database: a SQLite file under tmp_path, or a fresh PostgreSQL database.

    The PostgreSQL case runs only when GENBOT_TEST_DATABASE_URL names a server
    (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test); each test gets its own database,
    dropped afterwards. Nothing is migrated: call genbot.storage.upgrade_database or open it
    with genbot.storage.Database.open (which migrates SQLite by default).
    """
    from genbot.storage.db import default_sqlite_url

    if request.param == "sqlite":
        yield default_sqlite_url(tmp_path / "db")
        return
    server = os.environ.get("GENBOT_TEST_DATABASE_URL")
    if not server:
        pytest.skip("GENBOT_TEST_DATABASE_URL is not set")
    with fresh_postgres_database(server) as url:
        yield url


# ----- bundled-plugin folders for service, REPL and front-end tests ----------------------------


@pytest.fixture
def plugins_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus_text: str) -> Path:
    """A plugins folder with two working generators (``alpha``, ``beta``), set as GENBOT_PLUGINS_DIR."""
    folder = tmp_path / "plugins"
    write_model_folder(folder, "alpha", corpus_text, seed=1)
    write_model_folder(folder, "beta", corpus_text, seed=2)
    monkeypatch.setenv("GENBOT_PLUGINS_DIR", str(folder))
    return folder


# ----- background jobs: a database, a tiny plugin and a registered corpus (tests/test_jobs.py, test_schedules.py)


@pytest.fixture
async def jobs_env(db_url: str, plugins_dir: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Job settings (short leases, fast polls) on ``db_url`` with corpus ``plays``; returns the URL.

    The variables are set in ``os.environ``, so ``genbot`` child processes see the same database,
    data folder and plugins (``alpha`` and ``beta``, from ``plugins_dir``).
    """
    await _prepare_jobs_env(db_url, corpus_file, monkeypatch)
    return db_url


@pytest.fixture
async def sqlite_jobs_env(tmp_path: Path, plugins_dir: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``jobs_env`` on SQLite only, for tests whose point is not the database."""
    from genbot.storage.db import default_sqlite_url

    url = default_sqlite_url(tmp_path / "db")
    await _prepare_jobs_env(url, corpus_file, monkeypatch)
    return url


async def _prepare_jobs_env(url: str, corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the job-test environment, migrate ``url`` and register ``corpus_file`` as ``plays``."""
    from genbot.config import load_settings
    from genbot.service import GenbotService
    from genbot.storage.migrate import upgrade_database

    env = {
        "GENBOT_DATABASE_URL": url,
        "GENBOT_JOBS__LEASE_SECONDS": "2",
        "GENBOT_JOBS__HEARTBEAT_SECONDS": "0.5",
        "GENBOT_JOBS__POLL_SECONDS": "0.2",
        "GENBOT_JOBS__TRAIN_THREADS": "1",
        "GENBOT_VERSIONS__POLL_SECONDS": "0.5",
        "GENBOT_LOG_LEVEL": "DEBUG",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    await upgrade_database(url)
    async with GenbotService(load_settings(), serving=False) as service:
        await service.corpora.add("plays", [corpus_file])


@pytest.fixture
async def service(plugins_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GenbotService]:
    """The full service (bundled test generators ``alpha`` and ``beta``) on the test's migrated database."""
    from genbot.config import load_settings
    from genbot.service import GenbotService
    from genbot.storage.migrate import upgrade_database

    monkeypatch.setenv("GENBOT_DATABASE_URL", db_url)
    await upgrade_database(db_url)
    async with GenbotService(load_settings()) as svc:
        yield svc

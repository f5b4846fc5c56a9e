"""``genbot keys`` and ``genbot api``: keys are shown once and stored hashed; the server really serves."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from genbot.frontends.api.app import free_port
from genbot.frontends.cli import app


@pytest.fixture
def cli() -> CliRunner:
    """A runner with every command registered."""

    return CliRunner()


def test_keys_create_list_revoke(cli: CliRunner, tmp_path: Path) -> None:
    created = cli.invoke(app, ["keys", "create", "ci", "--admin"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("gb_") and len(key) > 30
    listed = cli.invoke(app, ["keys", "list", "--json"])
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["name"], row["admin"], row["prefix"], row["revoked_at"]) == ("ci", True, key[:10], None)
    _assert_only_the_hash_is_stored(tmp_path / "data" / "genbot.db", key)
    assert cli.invoke(app, ["keys", "create", "ci"]).exit_code == 2  # names are unique
    assert cli.invoke(app, ["keys", "revoke", "ci"]).exit_code == 0
    assert json.loads(cli.invoke(app, ["keys", "list", "--json"]).stdout)["revoked_at"] is not None
    missing = cli.invoke(app, ["keys", "revoke", "nobody"])
    assert missing.exit_code == 2 and "nobody" in missing.output


def _assert_only_the_hash_is_stored(db_file: Path, key: str) -> None:
    """The key's row holds sha256(key) and the prefix; the key itself is in neither the file nor its WAL."""
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        rows = conn.execute("SELECT key_hash, prefix FROM api_keys").fetchall()
    assert rows == [(hashlib.sha256(key.encode()).hexdigest(), key[:10])]
    files = [db_file, db_file.with_name(db_file.name + "-wal")]
    # The secret part (past the shown prefix) must not appear in any page, committed or not.
    leaked = [
        f.name for f in files if f.exists() and (key.encode() in f.read_bytes() or key[10:].encode() in f.read_bytes())
    ]
    assert leaked == [], f"the plaintext key is in {leaked}"


def test_api_refuses_public_address_without_keys(cli: CliRunner) -> None:
    result = cli.invoke(app, ["api", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "require_keys" in result.output


@pytest.mark.slow
def test_genbot_api_serves_until_sigterm(plugins_dir: Path) -> None:
    port = free_port()
    env = os.environ | {"GENBOT_ENGINE__TORCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "genbot", "api", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        body = _wait_json(f"http://127.0.0.1:{port}/healthz", proc)
        assert body["models"] == ["alpha", "beta"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/generate", json={"model": "alpha", "length": 10}, timeout=30)
        assert r.status_code == 200 and len(r.json()["text"]) == 10
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)  # the web playground, on by default
        assert page.status_code == 200 and "<title>genbot playground</title>" in page.text
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""


@pytest.mark.slow
def test_genbot_serve_runs_the_api_beside_the_worker(plugins_dir: Path) -> None:
    port = free_port()
    env = os.environ | {"GENBOT_API__PORT": str(port), "GENBOT_JOBS__POLL_SECONDS": "0.2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genbot", "serve", "--api"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _wait_json(f"http://127.0.0.1:{port}/healthz", proc)["status"] == "ok"
        assert 'genbot_jobs{state="running"}' in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""


def _wait_json(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"genbot api exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            return httpx.get(url, timeout=2).json()
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("genbot api did not start")

"""A built wheel works outside the checkout: bundled models, migrations and every front end.

The wheel is built from this tree, installed with ``--no-deps`` into a fresh virtual environment
whose only other path is this test environment's site-packages (for the dependencies), and run
from an empty folder with no ``bot.toml``: nothing can reach the checkout's ``plugins/`` or
``migrations/``.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genbot.frontends.api.app import free_port

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "plugin.toml").is_file())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv holding the genbot wheel built from this tree."""
    base = tmp_path_factory.mktemp("wheel")
    wheels = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("genbot-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh_site = next((venv / "lib").glob("python3*/site-packages"))
    # The dependencies come from this environment, after the fresh site-packages (so its genbot wins).
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """An empty working folder and an environment that names no genbot path but the data folder (and paths cache)."""
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENBOT_", "PYTHON", "VIRTUAL_ENV"))}
    env["GENBOT_DATA_DIR"] = str(tmp_path / "data")
    # The test process's measured serving paths (outside the checkout): each start would measure anew.
    env["GENBOT_ENGINE__PATHS_CACHE"] = os.environ["GENBOT_ENGINE__PATHS_CACHE"]
    yield work, env


def run(bin_dir: Path, where: tuple[Path, dict[str, str]], *args: str, stdin: str = "") -> str:
    """Run the installed ``genbot`` with ``args``; its stdout (fails the test on a non-zero status)."""
    cwd, env = where
    done = subprocess.run(
        [str(bin_dir / "genbot"), *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


Where = tuple[Path, dict[str, str]]


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, outside: Where) -> None:
    code = "import genbot.resources as r; print(r.bundled_plugins_dir()); print(r.migrations_dir())"
    cwd, env = outside
    out = subprocess.run(
        [str(installed / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    venv = installed.parent.resolve()
    assert all(Path(p).is_relative_to(venv) and "_bundled" in p for p in out), out


def test_the_wheel_carries_the_native_kernels_source_and_builds_them(installed: Path, outside: Where) -> None:
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler here: the native kernels are optional")
    cwd, env = outside
    code = (
        "import sys; from pathlib import Path; from genbot.networks import native;"
        "lib = native.library(Path(sys.argv[1])); print(native.__file__, lib and lib.path, native.unavailable_reason())"
    )
    out = subprocess.run(
        [str(installed / "python"), "-c", code, str(cwd / "native")], cwd=cwd, env=env, capture_output=True, text=True
    )
    module, built, reason = out.stdout.split()
    assert Path(module).is_relative_to(installed.parent.resolve()), module
    assert reason == "None" and Path(built).parent == cwd / "native", out.stdout + out.stderr


def test_models_sample_and_repl_from_an_empty_folder(installed: Path, outside: tuple[Path, dict[str, str]]) -> None:
    listed = [json.loads(line)["name"] for line in run(installed, outside, "models", "--json").splitlines()]
    assert set(BUNDLED) <= set(listed)
    text = run(installed, outside, "sample", "shakespeare", "--length", "20", "--seed", "1")
    assert len(text.strip()) > 0
    repl = run(installed, outside, "repl", stdin="/len 20\nROMEO:\n")
    assert "shakespeare v1" in repl
    assert (Path(outside[1]["GENBOT_DATA_DIR"]) / "genbot.db").is_file()  # migrated from the wheel's copy


def test_api_serves_every_bundled_generator(installed: Path, outside: tuple[Path, dict[str, str]]) -> None:
    cwd, env = outside
    port = free_port()
    server = subprocess.Popen(
        [str(installed / "genbot"), "api", "--port", str(port)], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API server did not come up"
            time.sleep(0.2)
        generators = httpx.get(f"{url}/v1/generators", timeout=10).json()["generators"]
        status = {g["name"]: g["status"] for g in generators}
        assert status == {name: "loaded" for name in BUNDLED}
        reply = httpx.post(
            f"{url}/v1/generate", json={"model": "linux", "prompt": "static int", "length": 30, "seed": 1}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "completed" and len(reply.json()["text"]) == 30
        # The playground's files are package data: the page and every script come from the wheel.
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "/static/app.js" in page.text
        for name in ("app.js", "api.js", "generate.js", "style.css"):
            assert httpx.get(f"{url}/static/{name}", timeout=10).status_code == 200, name
    finally:
        server.terminate()
        server.wait(timeout=30)

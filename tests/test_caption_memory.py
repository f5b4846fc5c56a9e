"""Captioning huge-but-tiny uploads keeps a real ``genbot api`` server's memory bounded.

A blank 6300x6300 16-bit PNG is ~80 KB on the wire but 79 MB of pixels once decoded (and
several times that if it were converted at full size in float64); four of them at once used to
take the server to about 3 GB. The server's peak RSS (``VmHWM``) must stay under 1 GB.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from genbot.config import bundled_plugins_dir
from genbot.frontends.api.app import free_port

SIDE = 6300  # 39.7 M pixels: just under the decoder's pixel cap
PEAK_RSS_LIMIT = 1024**3
UPLOADS = 4


def blank_16bit_png() -> bytes:
    """A blank SIDE x SIDE 16-bit greyscale PNG (compresses to a few tens of KB)."""
    buf = io.BytesIO()
    Image.new("I;16", (SIDE, SIDE)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (``VmHWM`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise AssertionError("no VmHWM in /proc status")


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Poll /healthz until the server answers (AssertionError if it exits or never does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"genbot api exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("genbot api did not start")


async def post_all(url: str, data: bytes) -> list[int]:
    """POST the image UPLOADS times at once; the status codes."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        responses = await asyncio.gather(
            *(c.post("/v1/caption", files={"image": (f"{i}.png", data, "image/png")}) for i in range(UPLOADS))
        )
    return [r.status_code for r in responses]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_four_parallel_huge_16bit_pngs_keep_peak_rss_under_1gb(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    shutil.copytree(bundled_plugins_dir() / "captioner", plugins / "captioner")
    port = free_port()
    env = os.environ | {"GENBOT_PLUGINS_DIR": str(plugins), "GENBOT_ENGINE__TORCH_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genbot", "api", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        statuses = asyncio.run(post_all(url, blank_16bit_png()))
        peak = peak_rss_bytes(proc.pid)
        print(f"peak RSS after {UPLOADS} parallel {SIDE}x{SIDE} 16-bit PNGs: {peak / 2**20:.0f} MiB")
        assert set(statuses) <= {200, 503} and 200 in statuses, statuses  # past the caption cap: 503
        assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
    finally:
        proc.terminate()
        proc.wait(timeout=60)

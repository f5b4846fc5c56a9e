"""Property-based tests of the HTTP API against its own OpenAPI schema (schemathesis).

Every operation gets generated valid and invalid requests; none may get a 5xx other than the
documented 503, and every status must be one the schema documents. The server is real (uvicorn
on loopback, in a thread with its own event loop) over tiny models with short generations, so
the run stays around a minute.

The default run is deterministic (hypothesis ``derandomize``, no example database): the same
cases every time, so CI cannot fail at random. A longer random run is opt-in:
``GENBOT_TEST_FUZZ_RANDOM=1 GENBOT_TEST_FUZZ_EXAMPLES=500 pytest -m slow tests/test_api_schema.py``.
A failure prints the request that caused it as a curl line (without the Authorization header).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from genbot.config import ApiSettings, bundled_plugins_dir
from tests.helpers import api_server


@pytest.fixture
def live_url(plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real server in a background thread (schemathesis calls it synchronously); yields "URL#admin key".

    The bundled captioner is loaded beside alpha and beta, so generated uploads reach the image decoder.
    """
    monkeypatch.setenv("GENBOT_SAMPLING__MAX_LENGTH", "200")  # keeps each generated request short
    monkeypatch.setenv("GENBOT_SAMPLING__LENGTH", "50")
    shutil.copytree(bundled_plugins_dir() / "captioner", plugins_dir / "captioner")  # /v1/caption decodes uploads
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = (asyncio.get_running_loop(), stop)
        async with api_server(ApiSettings(rate_per_minute=0)) as (url, service):
            _, key = await service.keys.create("fuzz", admin=True)
            box["url"] = url
            box["key"] = key
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(60), "the API server did not start"
    yield f"{box['url']}#{box['key']}"
    loop, stop = box["stop"]  # type: ignore[misc]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


EXAMPLES = 8  # per operation and mode (tests/test_api_hostile.py sends every field its hostile values)
# The opt-in random run (read at import: the test environment drops GENBOT_* variables).
RANDOM_RUN = os.environ.get("GENBOT_TEST_FUZZ_RANDOM") == "1"
RANDOM_EXAMPLES = int(os.environ.get("GENBOT_TEST_FUZZ_EXAMPLES", "300"))
CHECKS = [not_a_server_error, status_code_conformance]


def test_no_input_gets_a_server_error(live_url: str) -> None:
    """Valid or not, every request to every operation gets a documented status and never a 500 (same cases each run)."""
    _fuzz_every_operation(live_url, EXAMPLES, derandomize=True)


@pytest.mark.slow
@pytest.mark.skipif(not RANDOM_RUN, reason="a longer random run: set GENBOT_TEST_FUZZ_RANDOM=1")
def test_random_inputs_get_no_server_error(live_url: str) -> None:
    """The same checks over GENBOT_TEST_FUZZ_EXAMPLES random cases per operation and mode."""
    _fuzz_every_operation(live_url, RANDOM_EXAMPLES, derandomize=False)


def _fuzz_every_operation(live_url: str, examples: int, *, derandomize: bool) -> None:
    """Fuzz every operation of the live server's schema with valid and invalid input."""
    # Driven by hand: schemathesis's pytest plugin does not support this pytest version.
    url, key = live_url.split("#")
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        _fuzz(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), key, examples, derandomize)
        # An operation without parameters or body has no invalid input to generate.
        with contextlib.suppress(Unsatisfiable):
            _fuzz(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), key, examples, derandomize)
    served = _requests_by_status(url)
    assert sum(served.values()) >= examples * len(operations)  # the cases really reached the server
    assert not any(status.startswith("5") and status != "503" for status in served), served


def _requests_by_status(url: str) -> dict[str, float]:
    """Requests the server counted, by status (from its own /metrics)."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("genbot_http_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            counts[status] = counts.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _fuzz(strategy: SearchStrategy[schemathesis.Case], key: str, examples: int, derandomize: bool) -> None:
    """Run generated cases through the server and the checks, as an admin (auth is tested elsewhere)."""

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # no replay of earlier failures: a run depends on nothing but the code
        derandomize=derandomize,
        print_blob=not derandomize,  # a random failure prints what reproduces it
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        note(f"request: {_curl(case)}")  # hypothesis prints notes of the failing example only
        case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    run()


def _curl(case: schemathesis.Case) -> str:
    """The case as a curl line (method, path, query, headers, body) without any Authorization header."""
    line = case.as_curl_command()
    return re.sub(r"-H '(?i:authorization): [^']*' ?", "", line)

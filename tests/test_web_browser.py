"""The web playground in a real headless Chromium against a real ``genbot serve --api`` on loopback.

One server and one browser serve the whole module: generators ``alpha`` (a tiny random LSTM whose
vocabulary holds HTML's characters) and the bundled ``captioner``; the local caller may use the
admin routes (``[api] unkeyed_admin``), and the embedded job worker runs fine-tunes. Screenshots
of each view go to GENBOT_TEST_SCREENSHOTS (default: a temporary folder).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genbot.config import bundled_plugins_dir
from genbot.frontends.api.app import free_port
from genbot.training.caption_data import HELD_OUT_SEED
from genbot.training.scenes import render_scene
from tests.helpers import chromium_executable, make_corpus_text, wait_json, write_model_folder

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # a browser and a server: timing-sensitive under load
HOSTILE = "<img src=x onerror=alert(1)>"
BIG_SEED = 2**63 - 1  # past 2**53: a JavaScript number would round it (to 2**63, out of range)
CHROMIUM = chromium_executable()

if CHROMIUM is None:
    pytest.skip(
        "no Chromium to drive: install Debian's chromium (apt-get install chromium chromium-driver; .ci/run does) "
        "or set GENBOT_TEST_CHROMIUM",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is in the dev extra")


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the module's server (and of ``genbot`` commands on its database)."""
    base = tmp_path_factory.mktemp("web")
    plugins = base / "plugins"
    write_model_folder(plugins, "alpha", make_corpus_text() + HOSTILE + "\"'&;", seed=3)
    for bundled in ("captioner", "linux"):  # linux: a trained model, for features worth seeing
        shutil.copytree(bundled_plugins_dir() / bundled, plugins / bundled)
    return {k: v for k, v in os.environ.items() if not k.startswith("GENBOT_") and k != "DISCORD_TOKEN"} | {
        "GENBOT_DATA_DIR": str(base / "data"),
        "GENBOT_PLUGINS_DIR": str(plugins),
        "GENBOT_API__PORT": str(free_port()),
        "GENBOT_API__UNKEYED_ADMIN": "true",
        "GENBOT_ENGINE__TORCH_THREADS": "1",
        "GENBOT_ENGINE__PATHS_CACHE": str(tmp_path_factory.getbasetemp() / "engine-paths.json"),  # as conftest sets it
        "GENBOT_JOBS__POLL_SECONDS": "0.2",
        "GENBOT_JOBS__HEARTBEAT_SECONDS": "0.5",
        "GENBOT_JOBS__TRAIN_THREADS": "1",
        "GENBOT_VERSIONS__POLL_SECONDS": "0.5",
        "GENBOT_SAMPLING__MAX_LENGTH": "100000",  # a generation long enough to stop by hand, even at full speed
    }


@pytest.fixture(scope="module")
def server(server_env: dict[str, str]) -> Iterator[str]:
    """``genbot serve --api`` (API, page and job worker) over alpha, linux and the captioner; yields its URL."""
    cmd = [sys.executable, "-m", "genbot", "serve", "--api", "--no-discord", "--no-scheduler"]
    proc = subprocess.Popen(cmd, env=server_env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{server_env['GENBOT_API__PORT']}"
        wait_json(f"{url}/healthz", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's) for the module."""
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go."""
    folder = Path(os.environ.get("GENBOT_TEST_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page with every console error, uncaught exception and dialog it raised."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Watched]:
    """A fresh page (own localStorage) on the playground, its generator cards loaded."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, base_url=server)
    watched = Watched(context.new_page())
    watched.page.goto("/")
    watched.page.wait_for_selector('.card[data-model="alpha"][aria-checked="true"]')
    yield watched
    context.close()
    assert watched.errors == [], f"console errors: {watched.errors}"
    assert watched.dialogs == [], f"the page opened dialogs: {watched.dialogs}"


def output(page: Any, selector: str = "#gen-text") -> str:
    """The text of an element, as the user sees it."""
    return str(page.eval_on_selector(selector, "e => e.textContent"))


def until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until it is truthy (wait_for_function would eval a string, which the CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {expression}")
        time.sleep(0.05)


def record_growth(page: Any) -> None:
    """Note every length the generated text passes through (to see that it streams)."""
    page.evaluate(
        """() => {
        window.seenLengths = [];
        new MutationObserver(() => window.seenLengths.push(document.getElementById('gen-text').textContent.length))
          .observe(document.getElementById('gen-text'), {childList: true, characterData: true, subtree: true});
    }"""
    )


def test_page_loads_with_cards_and_no_console_errors(page: Watched, shots: Path) -> None:
    p = page.page
    card = p.locator('.card[data-model="alpha"]')
    assert "LSTM 2×32" in card.inner_text() and "val loss" in card.inner_text()
    linux = p.locator('.card[data-model="linux"]').inner_text()
    assert "nats/char" in linux and "GPL" in linux, linux  # the card's val loss and licence
    assert p.locator('.card[data-model="captioner"]').count() == 0  # captioners are in their own view
    assert p.locator("#tab-generate").get_attribute("aria-selected") == "true"
    assert p.locator("label:has(#gen-temperature)").inner_text().startswith("Temperature")
    p.screenshot(path=str(shots / "generate-empty.png"), full_page=True)


def test_generation_streams_and_equals_the_api_text_for_the_seed(page: Watched, server: str, shots: Path) -> None:
    p = page.page
    # The trained 2x384 model: a tiny one writes 4,000 characters faster than a browser repaints.
    p.locator('.card[data-model="linux"]').click()
    p.fill("#gen-prompt", "ROMEO:\n")
    p.fill("#gen-seed", str(BIG_SEED))
    p.fill("#gen-length", "4000")
    p.fill("#gen-temperature", "0.9")
    record_growth(p)
    p.click("#gen-go")
    p.wait_for_selector('#gen-output[data-status="completed"]', timeout=60_000)
    shown = output(p)
    api = httpx.post(
        f"{server}/v1/generate",
        json={"model": "linux", "prompt": "ROMEO:\n", "seed": BIG_SEED, "length": 4000, "temperature": 0.9},
        timeout=60,
    ).json()
    assert shown == api["text"] and len(shown) == 4000
    seen = p.evaluate("window.seenLengths")
    assert len({n for n in seen if 0 < n < 4000}) >= 2, f"the text did not arrive in pieces: {seen[:20]}"
    footer = p.inner_text("#gen-footer")
    assert f"seed {BIG_SEED}" in footer and "chars/s" in footer and "first char" in footer
    p.screenshot(path=str(shots / "generate.png"), full_page=True)
    # "reproduce" refills the form from the link, and the same seed gives the same text again.
    p.fill("#gen-prompt", "")
    p.fill("#gen-seed", "")
    p.click("#gen-footer a.reproduce")
    until(p, f"document.getElementById('gen-seed').value === '{BIG_SEED}'")
    assert p.input_value("#gen-prompt") == "ROMEO:\n"
    p.keyboard.press("Control+Enter")
    p.wait_for_selector('#gen-output[data-status="completed"]', timeout=60_000)
    assert output(p) == shown


def test_stop_and_escape_cancel_and_the_row_says_cancelled(page: Watched, server: str) -> None:
    p = page.page
    p.locator('.card[data-model="linux"]').click()
    p.fill("#gen-prompt", "JULIET:\n")
    p.fill("#gen-length", "100000")
    p.click("#gen-go")
    until(p, "document.getElementById('gen-text').textContent.length > 20", timeout=30)
    p.click("#gen-stop-button")
    p.wait_for_selector('#gen-output[data-status="cancelled"]', timeout=30_000)
    until(p, "document.getElementById('gen-status').textContent.includes('stored as cancelled')")
    rows = httpx.get(f"{server}/v1/generations", params={"limit": 1}, timeout=10).json()["generations"]
    assert rows[0]["status"] == "cancelled" and rows[0]["prompt"] == "JULIET:\n" and rows[0]["chars"] < 100_000
    # The History view shows the row as cancelled; Esc stops a run started with Ctrl-Enter too.
    p.click("#tab-history")
    p.wait_for_selector(f'#hist-rows tr[data-id="{rows[0]["id"]}"] .badge.cancelled')
    p.click("#tab-generate")
    p.focus("#gen-prompt")
    p.keyboard.press("Control+Enter")
    until(p, "document.getElementById('gen-text').textContent.length > 20", timeout=30)
    p.keyboard.press("Escape")
    p.wait_for_selector('#gen-output[data-status="cancelled"]', timeout=30_000)


def test_hostile_prompt_is_shown_as_text_and_runs_nothing(page: Watched, server: str) -> None:
    p = page.page
    p.fill("#gen-prompt", HOSTILE)
    p.fill("#gen-length", "40")
    p.click("#gen-go")
    p.wait_for_selector('#gen-output[data-status="completed"]', timeout=60_000)
    assert output(p, "#gen-echo") == HOSTILE  # the prompt shown ahead of the output, as text
    p.click("#tab-history")
    p.fill("#hist-search", "onerror")
    p.click("#hist-form button[type=submit]")
    prompt = p.locator("#hist-rows tr .prompt").first
    prompt.wait_for()
    assert prompt.inner_text() == HOSTILE
    assert p.locator("main img:not(#cap-preview):not([src^='/static/'])").count() == 0
    shown = output(p, "#hist-rows tr .output-text")
    # Re-run puts the stored prompt back in the form, as text, and generates the same text again.
    p.locator("#hist-rows tr button", has_text="Re-run").first.click()
    until(p, f"document.getElementById('gen-prompt').value === {HOSTILE!r}")
    p.wait_for_selector('#gen-output[data-status="completed"]', timeout=60_000)
    assert output(p) == shown
    assert page.dialogs == []


def test_the_pages_csp_refuses_inline_script(page: Watched) -> None:
    p = page.page
    p.evaluate(
        """() => {
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.body.append(script);
    }"""
    )
    deadline = time.monotonic() + 5  # the refusal reaches the console a moment later
    while not page.errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.evaluate("() => window.injected === undefined")
    assert page.errors and all("Content Security Policy" in e for e in page.errors), page.errors
    page.errors.clear()  # Chromium logs each refusal as a console error: these were expected


def test_inspect_colours_the_text_and_lists_units_against_chance(page: Watched, shots: Path) -> None:
    p = page.page
    p.click("#tab-inspect")
    p.select_option("#ins-model", "linux")
    p.select_option("#ins-example", "C code")
    p.select_option("#ins-find", "bracket-depth")
    p.click("#ins-go")
    p.wait_for_selector('#ins-output[data-coloured="unit"]', timeout=30_000)
    text = p.input_value("#ins-text")
    spans = p.locator("#ins-output span.ch")
    assert spans.count() == len(text) and output(p, "#ins-output") == text
    colours = set(p.eval_on_selector_all("#ins-output span.ch", "s => s.map(e => e.style.backgroundColor)"))
    assert len(colours) > 10, "the characters are not coloured by the unit's values"
    assert "chance |r| up to" in p.inner_text("#ins-discovery caption")
    assert p.locator("#ins-discovery tbody tr").count() == 8
    spans.nth(5).hover()
    assert "→" in p.inner_text("#ins-hover")
    p.screenshot(path=str(shots / "inspect.png"), full_page=True)
    # A listed unit is clickable: the runner-up becomes the unit shown.
    second = p.locator("#ins-discovery tbody button").nth(1)
    label = second.inner_text()
    second.click()
    until(p, "document.getElementById('ins-summary').textContent.includes('(given)')")
    assert label in p.inner_text("#ins-summary")
    # Gates: the saturation plot, one canvas per layer and sigmoid gate.
    p.select_option("#ins-kind", "gates")
    p.click("#ins-go")
    p.wait_for_selector("#ins-gates canvas.gate")
    assert p.locator("#ins-gates canvas.gate").count() == 2 * 3  # two layers, LSTM gates i f o
    p.screenshot(path=str(shots / "inspect-gates.png"), full_page=True)


def test_unknown_characters_are_named_and_the_rest_still_coloured(page: Watched) -> None:
    p = page.page
    p.click("#tab-inspect")
    p.select_option("#ins-model", "alpha")
    p.fill("#ins-text", "ROMEO:\n{good} night\n")  # alpha's corpus has no braces
    p.click("#ins-go")
    p.wait_for_selector('#ins-output[data-coloured="unit"]', timeout=30_000)
    assert "unknown characters" in p.inner_text("#ins-summary")
    assert p.locator("#ins-output span.ch").count() == len(output(p, "#ins-output"))


def test_live_colouring_by_a_unit_and_by_probability(page: Watched, shots: Path) -> None:
    p = page.page
    p.select_option("#gen-colour", "unit")
    p.fill("#gen-layer", "1")
    p.fill("#gen-unit", "3")
    p.fill("#gen-length", "300")
    p.fill("#gen-seed", "1")
    p.click("#gen-go")
    p.wait_for_selector('#gen-output[data-status="completed"][data-coloured="unit"]', timeout=60_000)
    assert p.locator("#gen-text span.ch").count() == 300
    # A trained model coloured by how likely it found each character it wrote.
    p.locator('.card[data-model="linux"]').click()
    p.select_option("#gen-colour", "prob")
    p.fill("#gen-prompt", "static int ")
    p.fill("#gen-length", "600")
    p.fill("#gen-temperature", "0.7")
    p.click("#gen-go")
    p.wait_for_selector('#gen-output[data-status="completed"][data-coloured="prob"]', timeout=60_000)
    titles = p.eval_on_selector_all("#gen-text span.ch", "s => s.map(e => e.title)")
    assert len(titles) == 600 and all(t.startswith("p = ") for t in titles)
    p.screenshot(path=str(shots / "generate-probability.png"), full_page=True)


def test_caption_upload_answers_with_log_probs(page: Watched, shots: Path, tmp_path: Path) -> None:
    p = page.page
    image = tmp_path / "scene.png"
    buf = io.BytesIO()
    render_scene(HELD_OUT_SEED + 3, 64).image.save(buf, "PNG")
    image.write_bytes(buf.getvalue())
    p.click("#tab-caption")
    p.set_input_files("#cap-file", str(image))
    p.wait_for_selector("#cap-list li", timeout=30_000)
    items = p.locator("#cap-list li")
    assert items.count() == 3
    logprobs = [float(t.split("log p ")[1]) for t in p.locator("#cap-list .logprob").all_inner_texts()]
    assert logprobs == sorted(logprobs, reverse=True) and all(lp < 0 for lp in logprobs)
    assert p.locator("#cap-preview").is_visible()
    p.screenshot(path=str(shots / "caption.png"), full_page=True)


def test_admin_uploads_a_corpus_fine_tunes_and_rolls_back(page: Watched, shots: Path, tmp_path: Path) -> None:
    p = page.page
    corpus = tmp_path / "plays.txt"
    corpus.write_text(make_corpus_text(30_000, seed=5), encoding="utf-8")
    p.click("#tab-admin")
    p.fill("#adm-corpus-name", "plays")
    p.fill("#adm-corpus-licence", HOSTILE)
    p.set_input_files("#adm-corpus-file", str(corpus))
    p.click("#adm-corpus-form button[type=submit]")
    until(p, "document.getElementById('adm-status').textContent.includes('Corpus plays stored')")
    until(p, "document.getElementById('adm-corpora').textContent.includes('plays')")
    assert HOSTILE in p.inner_text("#adm-corpora")  # shown as text, never run as markup
    p.select_option("#adm-job-corpus", "plays")
    p.fill("#adm-job-steps", "40")
    p.fill("#adm-job-eval", "10")
    p.click("#adm-job-form button[type=submit]")
    p.wait_for_selector('#adm-job-panel[data-status="running"]', timeout=60_000)
    p.wait_for_selector('#adm-job-panel[data-status="succeeded"]', timeout=120_000)
    assert int(p.get_attribute("#adm-loss", "data-points") or 0) >= 4
    assert p.inner_text('#adm-job-stats dd[data-stat="step"]').startswith("40")
    assert p.inner_text("#adm-job-sample").strip() != ""
    p.wait_for_selector('#adm-versions tr[data-version="2"][data-active="true"]', timeout=30_000)
    p.screenshot(path=str(shots / "admin.png"), full_page=True)
    p.locator('#adm-versions tr[data-version="1"] button', has_text="Roll back").click()
    p.wait_for_selector('#adm-versions tr[data-version="1"][data-active="true"]', timeout=30_000)
    # A long fine-tune is cancelled from the page while it runs.
    p.fill("#adm-job-steps", "100000")
    p.click("#adm-job-form button[type=submit]")
    p.wait_for_selector('#adm-job-panel[data-status="running"]', timeout=60_000)
    p.click("#adm-job-cancel")
    p.wait_for_selector('#adm-job-panel[data-status="cancelled"]', timeout=60_000)
    p.wait_for_selector("#adm-jobs tr .badge.cancelled")  # the job list follows once the job ends
    assert p.locator("#adm-jobs tr .badge.cancelled").count() == 1


def test_phone_width_has_no_sideways_scroll(browser: Any, server: str, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server, color_scheme="dark")
    p = context.new_page()
    p.goto("/")
    p.wait_for_selector('.card[data-model="alpha"]')
    for view in ("generate", "inspect", "history", "admin"):
        p.click(f"#tab-{view}")
        assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{view} scrolls sideways"
    p.click("#tab-generate")
    p.screenshot(path=str(shots / "generate-phone-dark.png"), full_page=True)
    context.close()


def test_a_saved_key_is_sent_as_a_bearer_token_and_history_is_the_keys_own(
    page: Watched, server: str, server_env: dict[str, str]
) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "genbot", "keys", "create", "browser"], env=server_env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[0]
    p = page.page
    p.click("#key-summary")
    p.fill("#key-input", key)
    p.click("#key-form button[type=submit]")
    assert p.evaluate("localStorage.getItem('genbot.apiKey')") == key
    assert p.context.cookies() == []
    p.fill("#gen-prompt", "NURSE:\n")
    p.fill("#gen-length", "30")
    with p.expect_request("**/v1/generate") as sent:
        p.click("#gen-go")
    assert sent.value.headers["authorization"] == f"Bearer {key}"
    p.wait_for_selector('#gen-output[data-status="completed"]', timeout=60_000)
    p.click("#tab-history")
    p.wait_for_selector("#hist-rows tr")
    assert p.locator("#hist-rows tr").count() == 1  # only this key's generation, none of the anonymous ones
    assert p.inner_text("#hist-rows tr .prompt") == "NURSE:\n"
    # A plain key may not administer: the Admin view says so and what to do.
    p.click("#tab-admin")
    until(p, "document.getElementById('adm-status').textContent.includes('not an admin key')")
    assert "genbot keys create NAME --admin" in p.inner_text("#adm-status")
    refused = [e for e in page.errors if "status of 403" in e]
    assert len(refused) == 1  # one refused request, reported once; Chromium logs it as a console error
    page.errors.remove(refused[0])
    # A reload keeps the key (localStorage); Forget drops it.
    p.reload()
    assert p.input_value("#key-input") == key
    p.click("#key-summary")
    p.click("#key-clear")
    assert p.evaluate("localStorage.getItem('genbot.apiKey')") is None

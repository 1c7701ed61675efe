"""The dashboard and the API docs in a real headless browser: Debian's `chromium`, driven by Playwright
with the system's executable (never a downloaded browser), against the real in-process server over
HTTP with three tiny real models.

The user's path is the test's: the page asks for the token, lists the registered experiments, and a
request changes its row within two refresh periods without a reload; the search filters on the server.
Nothing the browser loads comes from another host, and its console shows no error. A screenshot is
written to docs/img/dashboard.png on every run, for a person to look at (docs/dashboard.md shows it).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from core.http.app import create_app
from core.serving.engine import InferenceEngine
from core.serving.registry import Registry
from core.serving.request_path import RequestPath
from tests.conftest import REPO_ROOT, make_settings
from tests.live import live_server

TOKEN = "browser-test-token"
#: The page's refresh period in this test (the default): a request must show within two of them.
REFRESH_S = 2.0
SCREENSHOT = REPO_ROOT / "docs" / "img" / "dashboard.png"
#: Headless, and nothing the browser would do on its own: no GPU, no QUIC, no first-run or background
#: traffic, no updates, no sync (the profile is a new empty folder, `launch_persistent_context`).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed (`apt-get install -y chromium`; `make test` installs it when "
                    "absent): the dashboard's browser test needs it")
    return path


@dataclass
class Watched:
    """What a page did that it should not have: console errors, uncaught exceptions, failed or refused
    requests, and requests to another host than the endpoint."""

    origin: str
    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: self.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: None if r.url.startswith((self.origin + "/", "data:"))
                else self.problems.append(f"another host: {r.url}"))
        return page


@pytest.fixture
def server(tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = tmp_path / "experiments.toml"
    registry.write_text(f'[experiments.fe]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n\n'
                        f'[experiments.clf]\nsource = "{tiny_models["text-classification"]}"\ntask = "text-classification"\n\n'
                        f'[experiments.gen]\nsource = "{tiny_models["text-generation"]}"\ntask = "text-generation"\n')
    settings = make_settings(registry_path=registry, api_token=TOKEN)
    app = create_app(RequestPath(settings, Registry.load(registry), InferenceEngine(settings)))
    with live_server(app) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium(), headless=True, args=FLAGS,
            viewport={"width": 1440, "height": 560})
        try:
            yield context
        finally:
            context.close()


def row_text(page: Page, experiment: str, cell: str) -> str:
    return page.inner_text(f'tr[data-experiment="{experiment}"] td.{cell}').strip()


def test_the_dashboard_lists_the_experiments_and_follows_a_request(server: str, browser: BrowserContext) -> None:
    watched = Watched(server)
    page = watched.watch(browser.new_page())
    page.goto(f"{server}/dashboard?refresh={REFRESH_S:g}")
    page.fill("#token", TOKEN)  # the server has a token: the page asks for it first
    page.click("#login button[type=submit]")
    page.wait_for_selector('tr[data-experiment="gen"]', timeout=10_000)
    listed = page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.experiment)")
    assert listed == ["fe", "clf", "gen"]
    assert (row_text(page, "fe", "state"), row_text(page, "fe", "replicas")) == ("cold", "0")
    assert "3 cold" in page.inner_text("#states") and "refreshes every 2 s" in page.inner_text("#refresh")

    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http:
        assert http.post("/predict/fe", json={"inputs": "hello world"}).status_code == 200
        answered = time.monotonic()
        page.wait_for_function("() => document.querySelector('tr[data-experiment=\"fe\"]').dataset.state === 'warm'",
                               timeout=2 * REFRESH_S * 1000)  # within two refresh periods, no reload
        changed_s = time.monotonic() - answered
        assert row_text(page, "fe", "replicas").startswith("1")
        assert "1 in the hour" in page.inner_text('tr[data-experiment="fe"] td.timeline')
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # the page never reloaded
        for inputs in (["this movie was great", "this movie was terrible"], "the quick brown fox"):
            assert http.post("/predict/clf", json={"inputs": inputs}).status_code == 200
        assert http.post("/predict/fe", json={"inputs": "a longer sentence for testing"}).status_code == 200

    page.fill("#q", "CLF")  # the search runs on the server
    page.wait_for_function("() => [...document.querySelectorAll('#rows tr')].map(r => r.dataset.experiment).join() === 'clf'",
                           timeout=2 * REFRESH_S * 1000)
    assert "1–1 of 1 matching" in page.inner_text("#range") and page.is_disabled("#next")
    page.fill("#q", "")
    page.wait_for_function("() => document.querySelectorAll('#rows tr').length === 3 && "
                           "document.querySelector('tr[data-experiment=\"clf\"]').dataset.state === 'warm'",
                           timeout=3 * REFRESH_S * 1000)
    page.wait_for_timeout(REFRESH_S * 1000)  # one more refresh: the latest requests in the picture
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert watched.problems == [], watched.problems
    assert changed_s <= 2 * REFRESH_S


def test_the_api_docs_load_in_a_browser_from_the_endpoint_alone(server: str, browser: BrowserContext) -> None:
    watched = Watched(server)
    page = watched.watch(browser.new_page())
    page.set_extra_http_headers({"Authorization": f"Bearer {TOKEN}"})  # the docs are behind the token
    page.goto(f"{server}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "hybrid-serve" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector('.opblock-summary-path[data-path="/dashboard/data"]', timeout=10_000)  # the operations are listed
    assert watched.problems == [], watched.problems

"""The dashboard's routes without a browser: what answers without the token and what needs it, the
data endpoint's rows after a real request, search and paging over 1,000 experiments, and the dashboard's
and the API docs' pages loading nothing from another host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from core.http import dashboard_routes
from core.http.app import create_app
from core.http.static_files import STATIC
from core.serving.engine import InferenceEngine
from core.serving.registry import Experiment, Registry
from core.serving.request_path import RequestPath
from tests.conftest import make_settings
from tests.http.test_api import assert_json_error, make_path

TOKEN = "dashboard-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A URL that leaves the endpoint: a scheme and a host, or a protocol-relative `//host`.
OTHER_HOST = re.compile(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.IGNORECASE)


def registry_of(count: int) -> Registry:
    """`count` experiments in memory (no model is loaded): every tenth a text classifier."""
    return Registry({f"exp-{i:04d}": Experiment(id=f"exp-{i:04d}", source=f"./models/m{i}",
                                                 task="text-classification" if i % 10 == 0 else "feature-extraction")
                     for i in range(count)})


@pytest.fixture
def large() -> Iterator[TestClient]:
    settings = make_settings()
    with TestClient(create_app(RequestPath(settings, registry_of(1000), InferenceEngine(settings)))) as client:
        yield client


@pytest.fixture
def guarded(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with TestClient(create_app(make_path(registry_file, api_token=TOKEN))) as client:
        yield client


# --- the token ----------------------------------------------------------------------------------------
def test_the_page_and_its_assets_answer_without_the_token_and_hold_no_data(guarded: TestClient) -> None:
    page = guarded.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-auth="bearer"' in page.text  # the page asks for the token before it fetches anything
    assert "fe-2" not in page.text and "clf" not in page.text  # no experiment, no state
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, media in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        asset = guarded.get(f"/dashboard/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
        head = guarded.head(f"/dashboard/assets/{name}")
        assert head.status_code == 200 and head.headers["content-length"] == asset.headers["content-length"]
    assert guarded.head("/dashboard").status_code == 200  # GET and HEAD, as docs/dashboard.md says
    assert guarded.post("/dashboard").status_code == 401  # any other method needs the token


def test_the_data_needs_the_token(guarded: TestClient) -> None:
    assert_json_error(guarded.get("/dashboard/data"), 401, "unauthorized", "bearer token")
    assert_json_error(guarded.get("/dashboard/data", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    assert_json_error(guarded.get("/dashboard/assets/other.js"), 401, "unauthorized")  # only the page's files are open
    assert_json_error(guarded.post("/dashboard"), 401, "unauthorized")  # and only to GET
    data = guarded.get("/dashboard/data", headers=AUTH)
    assert data.status_code == 200 and data.headers["cache-control"] == "no-store"
    assert {r["id"] for r in data.json()["rows"]} >= {"fe", "clf", "gen"}


def test_without_a_token_configured_the_page_fetches_at_once(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file))) as client:
        assert 'data-auth="none"' in client.get("/dashboard").text
        assert client.get("/dashboard/data").status_code == 200


def test_errors_are_json_in_the_error_shape(guarded: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_json_error(guarded.get("/dashboard/assets/other.js", headers=AUTH), 404, "http_error", "other.js")
    assert_json_error(guarded.get("/dashboard/data?limit=501", headers=AUTH), 422, "invalid_request", "limit")
    assert_json_error(guarded.get("/dashboard/data?offset=-1", headers=AUTH), 422, "invalid_request", "offset")
    monkeypatch.setattr(dashboard_routes, "STATIC", tmp_path)  # an image that shipped the code without its files
    assert_json_error(guarded.get("/dashboard"), 503, "asset_missing", "dashboard.html")


# --- the rows -----------------------------------------------------------------------------------------
def test_a_request_shows_in_its_row(guarded: TestClient) -> None:
    def row(experiment: str) -> dict:
        data = guarded.get("/dashboard/data", headers=AUTH).json()
        assert data["traffic_recorded"] is True  # the default: kept on disk
        return next(r for r in data["rows"] if r["id"] == experiment)

    before = row("fe")
    assert (before["state"], before["replicas"], before["expires_in_s"], before["last_cold_start"]) == ("cold", 0, None, None)
    assert before["timeline"]["requests"] == [0] * 60
    assert guarded.post("/predict/fe", json={"inputs": "hello world"}, headers=AUTH).status_code == 200
    after = row("fe")
    assert (after["state"], after["replicas"], after["requests_in_window"]) == ("warm", 1, 1)
    assert after["scaledown_window_s"] == 900 and after["window_reason"] == "isolated" and after["window_detail"]
    assert 0 < after["expires_in_s"] <= 900 and after["phase"] == "keep-warm"
    assert after["last_cold_start"]["total_s"] > 0
    timeline = after["timeline"]
    assert len(timeline["replicas"]) == len(timeline["requests"]) == len(timeline["window_s"]) == 60
    assert timeline["requests"][-1] == 1 and timeline["cold_requests"][-1] == 1 and timeline["window_s"][-1] == 900
    assert timeline["replicas"][-1] > 0  # the ledger counts the loaded model's container
    assert after["cost_today"]["container_seconds"]["cold_start"] > 0
    assert row("gen")["state"] == "cold"


# --- 1,000 experiments: search and pages --------------------------------------------------------------
def test_pages_cover_1000_experiments_once_each_in_registry_order(large: TestClient) -> None:
    seen: list[str] = []
    for offset in range(0, 1000, 300):
        page = large.get(f"/dashboard/data?offset={offset}&limit=300").json()
        assert (page["total"], page["matched"], page["offset"], page["limit"]) == (1000, 1000, offset, 300)
        assert len(page["rows"]) == min(300, 1000 - offset)
        seen += [r["id"] for r in page["rows"]]
    assert seen == [f"exp-{i:04d}" for i in range(1000)]
    default = large.get("/dashboard/data").json()
    assert len(default["rows"]) == 50 and default["states"] == {"cold": 1000}
    assert large.get("/dashboard/data?offset=1000").json()["rows"] == []


def test_search_matches_the_id_or_the_task_case_blind(large: TestClient) -> None:
    by_id = large.get("/dashboard/data?q=EXP-09&limit=500").json()
    assert (by_id["total"], by_id["matched"]) == (1000, 100)
    assert [r["id"] for r in by_id["rows"]] == [f"exp-{i:04d}" for i in range(900, 1000)]
    second = large.get("/dashboard/data?q=exp-09&offset=50&limit=20").json()
    assert [r["id"] for r in second["rows"]] == [f"exp-{i:04d}" for i in range(950, 970)]
    by_task = large.get("/dashboard/data?q=classification&limit=500").json()
    assert by_task["matched"] == 100 and all(r["task"] == "text-classification" for r in by_task["rows"])
    assert large.get("/dashboard/data?q=no-such-thing").json()["matched"] == 0


# --- nothing from another host ------------------------------------------------------------------------
def test_the_dashboards_files_name_no_other_host() -> None:
    files = sorted(STATIC.iterdir())
    assert {f.name for f in files} == {"dashboard.html", "dashboard.js", "dashboard.css"}
    for path in files:
        assert not OTHER_HOST.search(path.read_text()), f"{path.name} names another host"
    page = (STATIC / "dashboard.html").read_text()
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith("{{root}}/dashboard/assets/") or url == "data:,", url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_every_file_from_the_endpoint(page: str, registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file))) as client:
        html = client.get(page)
        assert html.status_code == 200
        assert not OTHER_HOST.search(html.text), OTHER_HOST.findall(html.text)
        urls = re.findall(r'(?:src|href)="([^"]*)"', html.text) + re.findall(r"url: '([^']*)'", html.text)
        urls += re.findall(r'spec-url="([^"]*)"', html.text)
        assert len(urls) >= 3, urls  # the script, the favicon, the OpenAPI document (and Swagger UI's style sheet)
        for url in urls:
            assert url.startswith("/"), url
            assert client.get(url).status_code == 200, url
        assert_json_error(client.get("/docs/assets/other.js"), 404, "http_error")


def test_the_api_docs_open_without_the_token_and_declare_it(guarded: TestClient) -> None:
    """A browser cannot send a bearer header when it loads /docs: the pages and the document hold no
    data and open; Swagger UI's Authorize then sends the token the document declares."""
    for url in ("/docs", "/redoc", "/docs/assets/swagger-ui.css", "/openapi.json"):
        assert guarded.get(url).status_code == 200, url
    document = guarded.get("/openapi.json")
    assert document.json()["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "HYBRID_API_TOKEN"}
    assert document.json()["security"] == [{"bearer": []}]
    assert "fe-2" not in document.text and "clf" not in document.text  # no experiment in it
    assert_json_error(guarded.post("/openapi.json"), 401, "unauthorized")
    assert_json_error(guarded.get("/experiments"), 401, "unauthorized")


def test_the_data_endpoint_is_in_the_openapi_document(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file))) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "/dashboard/data" in paths and "/dashboard" not in paths


def test_the_current_minute_counts_the_containers_running_at_the_ledgers_reading() -> None:
    """The ledger is read a moment before the page's `now` (on Ray: as last published, seconds before);
    a reading just before a minute's end must not show the new minute with no replica."""
    from core.http.dashboard_view import timeline
    from core.keepwarm.ledger import ContainerState, UsageRecord

    record = UsageRecord("fe", as_of=5999.5, containers=1)  # minute 99 ends at 6000 s
    record.add(ContainerState.WARM_IDLE, 5940.0, 5999.5)
    points = timeline(record, [], first_minute=41, now=6000.3)["replicas"]
    assert points[-2:] == [1.0, 1.0]  # minute 99 in full, and the 0.3 s of minute 100 so far
    stopped = UsageRecord("fe", as_of=5999.5, containers=0)
    stopped.add(ContainerState.WARM_IDLE, 5940.0, 5970.0)
    assert timeline(stopped, [], first_minute=41, now=6000.3)["replicas"][-2:] == [0.5, 0.0]

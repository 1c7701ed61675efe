"""Traffic recorded by default, over real HTTP: every finished request of a registered experiment —
time, status, duration, cold or warm, queue wait — and never its inputs or outputs; `GET /traffic`
serves the recording; a restart keeps the last hour's counts; a recording that cannot be written
costs a warning, never a request; off means nothing is written."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from core.http.app import create_app
from tests.http.test_api import make_path
from tests.live import live_server

SECRET_INPUT = "zebra-quartz-7781 private text"


def traffic(http: httpx.Client, **params: object) -> list[dict]:
    response = http.get("/traffic", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_requests_are_recorded_by_default_without_their_inputs(registry_file: Path, clean_settings_env: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = time.time()
    with live_server(create_app(make_path(registry_file))) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/predict/fe", json={"inputs": SECRET_INPUT}).status_code == 200  # cold: loads the model
        assert http.post("/predict/fe", json={"inputs": [SECRET_INPUT, "two"]}).status_code == 200  # warm
        assert http.post("/predict/fe", json={"inputs": []}).status_code == 422
        assert http.post("/predict/no-such", json={"inputs": "x"}).status_code == 404  # a typo: no record
        records = traffic(http)
        assert [r["experiment"] for r in traffic(http, experiment="fe")] == ["fe", "fe", "fe"]
        assert traffic(http, since=time.time() + 60) == []
    requests = [r for r in records if r["event"] == "request"]
    assert [(r["experiment"], r["status"], r["cold"], r["inputs"]) for r in requests] == [
        ("fe", 200, True, 1), ("fe", 200, False, 2), ("fe", 422, False, 0)]
    for r in requests:
        assert before <= r["time"] <= time.time() and 0 < r["duration_s"] < 60
        assert set(r) == {"time", "experiment", "event", "status", "duration_s", "cold", "queue_wait_s", "inputs",
                          "window_s", "reason"}
    assert requests[1]["queue_wait_s"] >= 0 and requests[2]["queue_wait_s"] is None  # refused before any queue
    assert requests[0]["window_s"] == 900 and requests[0]["reason"]
    folder = clean_settings_env / "traffic"  # HYBRID_TRAFFIC_DIR of every test (tests/conftest.py)
    written = b"".join(p.read_bytes() for p in folder.iterdir())
    assert written and b"zebra-quartz" not in written and b"embedding" not in written


def test_the_last_hours_counts_survive_a_restart(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    since = time.time() - 60
    with live_server(create_app(make_path(registry_file))) as url, httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(3):
            assert http.post("/predict/fe", json={"inputs": "a"}).status_code == 200
    restarted = make_path(registry_file)  # a new server on the same recording
    counted = restarted.traffic.per_minute(since)["fe"]
    assert sum(m["requests"] for m in counted) == 3 and sum(m["cold_requests"] for m in counted) == 1
    assert counted[-1]["window_s"] == 1800 and counted[0]["minute"] % 60 == 0  # extended: recent activity


def test_an_unwritable_recording_costs_a_warning_not_a_request(registry_file: Path, clean_settings_env: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocker = clean_settings_env / "not-a-folder"
    blocker.write_text("a file where the recording's folder should be")
    path = make_path(registry_file, traffic_dir=blocker / "traffic")
    with caplog.at_level(logging.WARNING, logger="hybrid_serve.traffic"), \
            live_server(create_app(path)) as url, httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(5):
            assert http.post("/predict/fe", json={"inputs": "a"}).status_code == 200
        assert traffic(http) == []
    warnings = [r for r in caplog.records if "traffic recording" in r.getMessage()]
    assert len(warnings) == 1 and "requests are served, not recorded" in warnings[0].getMessage()
    assert sum(m["requests"] for m in path.traffic.per_minute(0)["fe"]) == 5  # the dashboard still counts them


def test_off_records_nothing(registry_file: Path, clean_settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with live_server(create_app(make_path(registry_file, traffic_record=False))) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/predict/fe", json={"inputs": "a"}).status_code == 200
        assert traffic(http) == []
        data = http.get("/dashboard/data").json()
    assert not (clean_settings_env / "traffic").exists()
    assert data["traffic_recorded"] is False  # and the timeline still counts this server's requests, in memory
    assert sum(data["rows"][0]["timeline"]["requests"]) == 1


def test_the_recording_is_behind_the_token(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with live_server(create_app(make_path(registry_file, api_token="s3cret-token"))) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/predict/fe", json={"inputs": "a"}, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        refused = http.get("/traffic")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert len(http.get("/traffic", headers={"Authorization": "Bearer s3cret-token"}).text.splitlines()) == 1

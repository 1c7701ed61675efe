"""The in-process server under load and hostile input, over real HTTP: evicted models freed, one bad
input failing only its own request, bounded waits, hung-up clients costing nothing, slow clients
cut off, a graceful shutdown, and `/health` closed when a token is set."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from core.http.app import create_app
from core.serving.engine import InferenceEngine
from core.serving.models import LoadedModel, load_model
from core.serving.registry import Experiment, Registry
from core.serving.request_path import RequestPath
from tests.conftest import free_port, make_settings
from tests.live import live_server


def make_path(registry_file: Path, loader: Any = load_model, **overrides: Any) -> RequestPath:
    settings = make_settings(registry_path=registry_file, **overrides)
    return RequestPath(settings, Registry.load(registry_file), InferenceEngine(settings, loader=loader))


class Tracking:
    """The real loader, keeping a weak reference to every model it loaded (and, optionally, slowing
    each forward pass down and counting the inputs that ran)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.loaded: list[weakref.ref[LoadedModel]] = []
        self.delay_s = delay_s
        self.ran: list[str] = []

    def __call__(self, experiment: Experiment) -> LoadedModel:
        model = load_model(experiment)
        run = model.run

        def slow_run(inputs: list[str], params: Any) -> list[Any]:
            time.sleep(self.delay_s)
            self.ran.extend(inputs)
            return run(inputs, params)

        model.run = slow_run
        self.loaded.append(weakref.ref(model))
        return model


# --- memory follows the cache's limits ---------------------------------------------------------------
def test_evicted_models_are_released(registry_file: Path) -> None:
    """With one model allowed, every model but the current one is garbage once evicted: the engine's
    batcher of an evicted model used to keep it (and a pending task) alive."""
    loader = Tracking()
    path = make_path(registry_file, loader, cache_max_models=1)
    with TestClient(create_app(path)) as client:
        for _ in range(4):
            for experiment in ("fe", "clf", "gen"):
                assert client.post(f"/predict/{experiment}", json={"inputs": "x"}).status_code == 200
        gc.collect()
        alive = [ref() for ref in loader.loaded if ref() is not None]
    assert len(loader.loaded) == 12
    assert [m.experiment.id for m in alive] == ["gen"]  # type: ignore[union-attr]


def test_rss_stays_within_one_model_of_the_steady_state_over_many_evictions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo model (all-MiniLM-L6-v2, ~90 MB of weights) under three names, one allowed at a time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    demo = Registry.load().get("demo-embeddings")
    assert demo is not None
    registry = Registry({name: demo.model_copy(update={"id": name}) for name in ("a", "b", "c")})
    settings = make_settings(cache_max_models=1)
    path = RequestPath(settings, registry, InferenceEngine(settings))

    def rss() -> int:
        gc.collect()
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with TestClient(create_app(path)) as client:
        for name in ("a", "b", "c"):
            client.post(f"/predict/{name}", json={"inputs": "warm up"})
        steady = rss()
        for _ in range(4):
            for name in ("a", "b", "c"):
                assert client.post(f"/predict/{name}", json={"inputs": "x"}).status_code == 200
        grown = rss() - steady
        model_bytes = client.get("/experiments").json()[-1]["model"]["size_bytes"]
    print(f"RSS after 12 more loads: {grown / 2**20:+.0f} MiB (one model: {model_bytes / 2**20:.0f} MiB)")
    assert grown < model_bytes


# --- one bad input fails only its own request -------------------------------------------------------------
def test_a_lone_surrogate_is_a_422_naming_the_input_and_its_neighbours_are_served(registry_file: Path) -> None:
    path = make_path(registry_file, batch_wait_ms=30)
    with live_server(create_app(path)) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                good = [http.post("/predict/fe", json={"inputs": f"valid {i}"}) for i in range(12)]
                bad = http.post("/predict/fe", content=b'{"inputs": ["fine", "\\ud800"]}',
                                headers={"Content-Type": "application/json"})
                return await asyncio.gather(bad, *good)

        bad, *good = asyncio.run(burst())
    assert bad.status_code == 422 and "inputs[1]" in bad.json()["error"]["message"]
    assert [r.status_code for r in good] == [200] * 12


def test_a_prompt_that_cannot_fit_the_context_is_a_422_naming_the_limit(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file))) as client:
        response = client.post("/predict/gen", json={"inputs": ["short", "word " * 200], "parameters": {"max_new_tokens": 20}})
    error = response.json()["error"]
    assert response.status_code == 422 and error["type"] == "invalid_input"
    assert "inputs[1]" in error["message"] and "context of" in error["message"]


def test_a_model_failure_fails_only_its_request_with_one_log_line(registry_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The model raises on one input: that request gets a 500 (the neighbours 200), the connection
    stays usable, and the log holds one line, not two tracebacks."""
    def poisoned(experiment: Experiment) -> LoadedModel:
        model = load_model(experiment)
        run = model.run

        def picky(inputs: list[str], params: Any) -> list[Any]:
            if "poison" in inputs:
                raise IndexError("index out of range in self")
            return run(inputs, params)

        model.run = picky
        return model

    caplog.set_level(logging.INFO)
    path = make_path(registry_file, poisoned, batch_wait_ms=30)
    with live_server(create_app(path)) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                return await asyncio.gather(http.post("/predict/fe", json={"inputs": "poison"}),
                                            *(http.post("/predict/fe", json={"inputs": f"ok {i}"}) for i in range(8)))

        bad, *good = asyncio.run(burst())
        with httpx.Client(base_url=url, timeout=60) as http:  # one keep-alive connection
            failed = http.post("/predict/fe", json={"inputs": "poison"})
            after = http.post("/predict/fe", json={"inputs": "fine"})
    assert bad.status_code == 500 and bad.json()["error"]["type"] == "model_failed"
    assert "IndexError" in bad.json()["error"]["message"]
    assert [r.status_code for r in good] == [200] * 8
    assert failed.status_code == 500 and after.status_code == 200
    assert "Traceback" not in caplog.text


def test_an_unexpected_error_is_one_json_500_with_a_request_id_and_one_log_line(registry_file: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = make_path(registry_file)

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    path.tracker.record_request = broken  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    with live_server(create_app(path)) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            response = http.post("/predict/fe", json={"inputs": "x"})
            again = http.get("/health")  # the same connection still works
            metrics = http.get("/metrics").text
    body = response.json()
    assert response.status_code == 500 and body["error"]["type"] == "internal_error"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert again.status_code == 200
    lines = [r for r in caplog.records if r.name == "hybrid_serve.api"]
    assert len(lines) == 1 and body["error"]["request_id"] in lines[0].getMessage()
    assert "Traceback" not in caplog.text
    recorded = [r["status"] for r in path.traffic.records() if r["event"] == "request"]
    assert recorded == [500], "recorded as what it was answered, not as a client that hung up (499)"
    assert re.search(r'hybrid_requests_total\{experiment="fe",status="500"\} 1\.0', metrics), metrics


# --- backpressure ------------------------------------------------------------------------------------------
def test_the_wait_per_experiment_is_bounded_with_503_and_retry_after(registry_file: Path) -> None:
    path = make_path(registry_file, Tracking(delay_s=0.3), max_queue=2, max_batch_size=1)
    with live_server(create_app(path)) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                await http.post("/predict/fe", json={"inputs": "load"})
                return await asyncio.gather(*(http.post("/predict/fe", json={"inputs": str(i)}) for i in range(8)))

        responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 3 and 503 in statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["Retry-After"] == "1" and "HYBRID_MAX_QUEUE" in refused.json()["error"]["message"]


def test_clients_that_hang_up_cost_nothing_and_the_server_answers_promptly(registry_file: Path) -> None:
    """200 clients send a request and hang up at once: their inputs never reach the model (each
    forward pass here takes 0.1 s, so running them would keep the server busy for 20 s)."""
    loader = Tracking(delay_s=0.1)
    path = make_path(registry_file, loader, max_batch_size=1)
    with live_server(create_app(path)) as url:
        port = int(url.rsplit(":", 1)[1])
        assert httpx.post(f"{url}/predict/fe", json={"inputs": "load"}, timeout=60).status_code == 200
        body = b'{"inputs": "gone"}'
        request = (b"POST /predict/fe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request)
        time.sleep(0.5)
        started = time.monotonic()
        assert httpx.post(f"{url}/predict/fe", json={"inputs": "me"}, timeout=60).status_code == 200
        waited = time.monotonic() - started
    ran = loader.ran.count("gone")
    print(f"hung-up requests that ran: {ran} of 200; a normal request then took {waited:.2f}s")
    assert ran < 20 and waited < 3.0


def test_slow_headers_are_cut_off_and_a_stalled_body_is_a_408(registry_file: Path) -> None:
    path = make_path(registry_file, header_timeout_s=0.5, body_timeout_s=0.5)
    with live_server(create_app(path)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /predict/fe HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
            sock.settimeout(5)
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 2.0
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /predict/fe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"inputs\": ")
            sock.settimeout(5)
            answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408") and "HYBRID_BODY_TIMEOUT_S" in answer


def test_ctrl_c_finishes_running_requests_refuses_queued_ones_and_exits(registry_file: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    env.update(HYBRID_REGISTRY=str(registry_file), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               HYBRID_MAX_BATCH_SIZE="1", HYBRID_SHUTDOWN_TIMEOUT_S="20")
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.Popen([str(exe), "serve", "--backend", "inprocess", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        while "is serving on" not in proc.stdout.readline():
            assert proc.poll() is None
        url = f"http://127.0.0.1:{port}"
        httpx.post(f"{url}/predict/gen", json={"inputs": "load"}, timeout=60)
        results: list[int] = []

        def client(i: int) -> None:
            try:
                r = httpx.post(f"{url}/predict/gen", json={"inputs": f"prompt {i}", "parameters": {"max_new_tokens": 100}},
                               timeout=60)
                results.append(r.status_code)
            except httpx.HTTPError:
                results.append(-1)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        exit_s = time.monotonic() - stopped_at
        for t in threads:
            t.join(30)
    finally:
        proc.kill()
    print(f"after Ctrl-C: {sorted(results)}; exited in {exit_s:.1f}s")
    assert 200 in results and 503 in results and -1 not in results
    assert exit_s < 15


# --- /health with a token ---------------------------------------------------------------------------------
def test_health_without_the_token_reveals_no_experiment(registry_file: Path) -> None:
    path = make_path(registry_file, api_token="s3cret-token-value")
    with TestClient(create_app(path)) as client:
        client.post("/predict/fe", json={"inputs": "x"}, headers={"Authorization": "Bearer s3cret-token-value"})
        bare = client.get("/health")
        assert bare.status_code == 200 and bare.json() == {"status": "ok"}
        assert "fe" not in bare.text and "HYBRID" not in bare.text
        for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme is case-insensitive
            full = client.get("/health", headers={"Authorization": f"{scheme} s3cret-token-value"})
            assert "fe" in full.json()["scaling"]["experiments"]
        assert client.get("/experiments").status_code == 401


# --- smaller items ---------------------------------------------------------------------------------------
def test_405_keeps_allow_and_openapi_lists_every_status(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file))) as client:
        wrong = client.get("/predict/fe")
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
        spec = client.get("/openapi.json").json()
        metrics = client.get("/metrics")
    predict = spec["paths"]["/predict/{experiment_id}"]["post"]["responses"]
    assert {"200", "401", "404", "408", "413", "422", "500", "503", "504"} <= set(predict)
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics.headers["content-type"].startswith("text/plain")
    json.dumps(spec)

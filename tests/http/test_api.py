"""The HTTP API over real FastAPI with tiny real models: outputs per task, bad input, loads, health, metrics."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.http.app import create_app
from core.serving.engine import InferenceEngine
from core.serving.models import load_model
from core.serving.registry import Registry
from core.serving.request_path import RequestPath
from tests.conftest import make_settings
from tests.live import live_server

TOKEN_ID = "ak-Qw8EeRt5YuI2oP9aSdF3gH"
TOKEN_SECRET = "as-Zx4CvB7nM1lK6jH0gF5dS2"


class CountingLoader:
    """The real loader, counting calls per experiment."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, experiment):  # type: ignore[no-untyped-def]
        with self._lock:
            self.calls[experiment.id] = self.calls.get(experiment.id, 0) + 1
        return load_model(experiment)


def make_path(registry_file: Path, loader: Any = load_model, **overrides: Any) -> RequestPath:
    settings = make_settings(registry_path=registry_file, **overrides)
    return RequestPath(settings, Registry.load(registry_file), InferenceEngine(settings, loader=loader))


@pytest.fixture
def client(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with TestClient(create_app(make_path(registry_file))) as c:
        yield c


def assert_json_error(response: httpx.Response, status: int, error_type: str, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == error_type
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


# --- outputs per task ---------------------------------------------------------------------------
def test_feature_extraction_one_normalised_vector_per_input(client: TestClient) -> None:
    first = client.post("/predict/fe", json={"inputs": ["hello world", "a longer sentence for testing"]})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["task"] == "feature-extraction"
    assert len(body["outputs"]) == 2 and all(len(v) == 32 for v in body["outputs"])
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-4) for v in body["outputs"])
    assert body["cold_load"] is True and body["timing"]["load_ms"] > 0
    assert set(body["timing"]) == {"queue_ms", "load_ms", "inference_ms", "total_ms"}
    second = client.post("/predict/fe", json={"inputs": "hello world"}).json()
    assert second["cold_load"] is False
    assert second["outputs"][0] == pytest.approx(body["outputs"][0], abs=1e-5)


def test_feature_extraction_without_normalisation(client: TestClient) -> None:
    body = client.post("/predict/fe", json={"inputs": "hello world", "parameters": {"normalize": False}}).json()
    assert not math.isclose(math.hypot(*body["outputs"][0]), 1.0, rel_tol=1e-3)


def test_text_classification_labels_and_top_k(client: TestClient) -> None:
    one = client.post("/predict/clf", json={"inputs": ["good", "bad"]}).json()
    assert [len(o) for o in one["outputs"]] == [1, 1]
    assert {o[0]["label"] for o in one["outputs"]} <= {"negative", "positive"}
    two = client.post("/predict/clf", json={"inputs": "good", "parameters": {"top_k": 2}}).json()["outputs"][0]
    assert {o["label"] for o in two} == {"negative", "positive"}
    assert two[0]["score"] >= two[1]["score"] and sum(o["score"] for o in two) == pytest.approx(1.0, abs=1e-5)


def test_text_generation_continues_each_prompt(client: TestClient) -> None:
    body = client.post("/predict/gen", json={"inputs": ["hello", "a longer prompt here"], "parameters": {"max_new_tokens": 4}})
    assert body.status_code == 200, body.text
    outputs = body.json()["outputs"]
    assert outputs[0]["generated_text"].startswith("hello")
    assert outputs[1]["generated_text"].startswith("a longer prompt here")
    assert len(outputs[0]["generated_text"]) > len("hello")


def test_demo_model_serves_real_sentence_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = make_settings()
    with TestClient(create_app(RequestPath(settings, Registry.load(), InferenceEngine(settings)))) as c:
        sentences = ["A cat sits on the mat.", "A kitten is lying on the rug.", "The stock market fell sharply today."]
        body = c.post("/predict/demo-embeddings", json={"inputs": sentences}).json()
    cat, kitten, stocks = body["outputs"]
    assert len(cat) == 384

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))

    assert cos(cat, kitten) > 0.5 > cos(cat, stocks)


# --- bad input, clear answers -------------------------------------------------------------------
def test_unknown_experiment_is_404(client: TestClient) -> None:
    error = assert_json_error(client.post("/predict/nope", json={"inputs": "x"}), 404, "unknown_experiment", "'nope'")
    assert "did you mean" not in error["message"]  # nothing registered is close


def test_a_misspelt_experiment_id_is_a_404_that_names_the_closest_registered_one(client: TestClient) -> None:
    for wrong in ("clff", "cl"):
        assert_json_error(client.post(f"/predict/{wrong}", json={"inputs": "x"}), 404, "unknown_experiment",
                          f"'{wrong}'", "did you mean 'clf'?")
    assert_json_error(client.get("/experiments/clff"), 404, "unknown_experiment", "did you mean 'clf'?")


@pytest.mark.parametrize("bad_id", ["bad$id", "a" * 129, "..%2F..%2Fetc%2Fpasswd", "sp ace"])
def test_invalid_experiment_id_is_422(client: TestClient, bad_id: str) -> None:
    response = client.post(f"/predict/{bad_id}", json={"inputs": "x"})
    assert response.status_code in (404, 422)
    if response.status_code == 422:
        assert_json_error(response, 422, "invalid_request", "experiment_id")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "json"),
        (b'{"inputs": 5}', "inputs"),
        (b'{"inputs": [1, 2]}', "inputs"),
        (b'{"inputs": "x", "extra": 1}', "extra"),
        (b'{"parameters": {}}', "inputs"),
        (b'{"inputs": []}', "non-empty"),
        (b'{"inputs": "x", "parameters": {"top_k": 2}}', "top_k"),
        (b'{"inputs": "x", "parameters": {"normalize": "sometimes"}}', "normalize"),
    ],
)
def test_malformed_body_or_wrong_input_is_422_with_reason(client: TestClient, body: bytes, fragment: str) -> None:
    response = client.post("/predict/fe", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"].lower()
    assert "Traceback" not in response.text


def test_generation_beyond_token_limit_is_422(client: TestClient) -> None:
    response = client.post("/predict/gen", json={"inputs": "x", "parameters": {"max_new_tokens": 10_000}})
    assert_json_error(response, 422, "invalid_input", "max_new_tokens", "128")


def test_body_over_limit_is_413(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file, max_body_bytes=1000))) as c:
        assert_json_error(c.post("/predict/fe", json={"inputs": "x" * 2000}), 413, "payload_too_large", "1000")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
            yield b'{"inputs": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}'

        assert_json_error(c.post("/predict/fe", content=chunks()), 413, "payload_too_large")
        assert c.post("/predict/fe", json={"inputs": "small"}).status_code == 200


def test_too_many_inputs_is_413(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file, max_inputs=3))) as c:
        assert_json_error(c.post("/predict/fe", json={"inputs": ["a"] * 4}), 413, "payload_too_large", "HYBRID_MAX_INPUTS")
        assert c.post("/predict/fe", json={"inputs": ["a"] * 3}).status_code == 200


def test_sha256_mismatch_is_refused_with_503(client: TestClient) -> None:
    assert_json_error(client.post("/predict/bad-sha", json={"inputs": "x"}), 503, "model_unavailable", "sha256", "refused")
    states = {e["id"]: e for e in client.get("/experiments").json()}
    assert states["bad-sha"]["state"] == "failed" and "sha256" in states["bad-sha"]["model"]["last_error"]


def test_failing_loads_are_503_retried_and_do_not_affect_others(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loader = CountingLoader()
    with TestClient(create_app(make_path(registry_file, loader=loader))) as c:
        assert_json_error(c.post("/predict/missing", json={"inputs": "x"}), 503, "model_unavailable", "does not exist")
        assert_json_error(c.post("/predict/offline-hub", json={"inputs": "x"}), 503, "model_unavailable", "Hugging Face")
        assert c.post("/predict/fe", json={"inputs": "x"}).status_code == 200
        assert_json_error(c.post("/predict/missing", json={"inputs": "x"}), 503, "model_unavailable")
        assert c.get("/health").json()["status"] == "ok"
    assert loader.calls["missing"] == 2  # the second request retried the load


# --- loading: single flight and LRU ----------------------------------------------------------------
def test_concurrent_requests_for_a_cold_experiment_load_it_once(registry_file: Path) -> None:
    loader = CountingLoader()
    with live_server(create_app(make_path(registry_file, loader=loader))) as url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/predict/fe-2", json={"inputs": f"text {i}"}) for i in range(16)))

        responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16
    assert loader.calls == {"fe-2": 1}
    assert all(r.json()["cold_load"] for r in responses)  # every one of them waited for that single load


def test_lru_eviction_by_count(registry_file: Path) -> None:
    with TestClient(create_app(make_path(registry_file, cache_max_models=2))) as c:
        for experiment in ("fe", "clf", "fe", "gen"):  # clf is the least recently used when gen arrives
            assert c.post(f"/predict/{experiment}", json={"inputs": "x"}).status_code == 200
        assert c.get("/health").json()["cached_models"] == ["fe", "gen"]
        states = {e["id"]: e["state"] for e in c.get("/experiments").json()}
        assert (states["clf"], states["fe"], states["gen"]) == ("cold", "warm", "warm")
        assert c.post("/predict/clf", json={"inputs": "x"}).json()["cold_load"] is True  # reloaded


def test_lru_eviction_by_memory_budget(registry_file: Path) -> None:
    path = make_path(registry_file)
    # Tiny models weigh ~100 KB, below the MiB granularity of the setting: set the byte budget directly.
    path.predictor.cache.models.max_bytes = 150_000  # type: ignore[attr-defined]
    with TestClient(create_app(path)) as c:
        c.post("/predict/fe", json={"inputs": "x"})
        c.post("/predict/clf", json={"inputs": "x"})
        assert c.get("/health").json()["cached_models"] == ["clf"]
        sizes = {e["id"]: e["model"].get("size_bytes") for e in c.get("/experiments").json()}
        assert 0 < sizes["clf"] <= 150_000 < sizes["clf"] + sizes["fe"]


# --- batching -------------------------------------------------------------------------------------
def test_concurrent_requests_are_batched_and_answered_to_the_right_caller(registry_file: Path) -> None:
    path = make_path(registry_file, batch_wait_ms=20)
    texts = [f"sentence number {i} about testing" for i in range(24)]
    with live_server(create_app(path)) as url:
        solo = {t: httpx.post(f"{url}/predict/fe-3", json={"inputs": t}, timeout=60).json()["outputs"][0] for t in texts[:4]}

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/predict/fe-3", json={"inputs": t}) for t in texts))

        responses = asyncio.run(burst())
    bodies = [r.json() for r in responses]
    assert max(b["batch_inputs"] for b in bodies) > 1  # some requests shared a forward pass
    for text, body in zip(texts, bodies):
        if text in solo:
            assert body["outputs"][0] == pytest.approx(solo[text], abs=1e-4)
    vectors = [tuple(round(x, 4) for x in b["outputs"][0]) for b in bodies]
    assert len(set(vectors)) == len(texts)  # nobody got somebody else's answer twice


# --- health, experiments, metrics -----------------------------------------------------------------
def test_health_reports_fields_and_no_secret(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", TOKEN_SECRET)
    with TestClient(create_app(make_path(registry_file))) as c:
        c.post("/predict/fe", json={"inputs": "x"})
        c.post("/predict/fe", json={"inputs": "y"})
        c.post("/predict/clf", json={"inputs": "x"})
        response = c.get("/health")
    health = response.json()
    assert health["status"] == "ok"
    assert health["authentication"] == {"mode": "production"}
    scaling = health["scaling"]
    assert (scaling["base_warm_time_s"], scaling["extension_time_s"], scaling["activity_window_s"], scaling["max_containers"]) == (900, 900, 300, 10)
    assert scaling["experiments"]["fe"]["scaledown_window_s"] == 1800
    assert scaling["experiments"]["fe"]["reason"] == "recent-activity"
    assert scaling["experiments"]["clf"]["scaledown_window_s"] == 900
    assert scaling["experiments"]["clf"]["reason"] == "isolated"
    assert health["activity"]["experiments"]["fe"]["requests_in_window"] == 2
    assert health["activity"]["experiments"]["fe"]["last_request_age_s"] >= 0
    assert sorted(health["cached_models"]) == ["clf", "fe"]
    assert health["configuration"]["MODAL_TOKEN_ID"] == "set"
    assert health["configuration"]["MODAL_BASE_WARM_TIME"] == 900
    for secret in (TOKEN_ID, TOKEN_SECRET):
        for i in range(len(secret) - 5):
            assert secret[i : i + 6] not in response.text


def test_experiments_lists_registry_with_states(client: TestClient) -> None:
    client.post("/predict/fe", json={"inputs": "x"})
    experiments = {e["id"]: e for e in client.get("/experiments").json()}
    assert set(experiments) == {"fe", "fe-2", "fe-3", "clf", "gen", "bad-sha", "missing", "offline-hub"}
    assert experiments["fe"]["state"] == "warm" and experiments["fe"]["model"]["cold_loads"] == 1
    assert experiments["gen"]["state"] == "cold" and experiments["gen"]["idle_s"] is None
    assert experiments["fe"]["scaledown_window_s"] == 900 and experiments["fe"]["window_reason"] == "isolated"


def test_the_in_process_engine_counts_its_one_replica_while_its_model_is_loaded(client: TestClient) -> None:
    client.post("/predict/fe", json={"inputs": "x"})
    experiments = {e["id"]: e for e in client.get("/experiments").json()}
    fe = experiments["fe"]
    assert (fe["state"], fe["replicas"], fe["model"]["replicas"]) == ("warm", 1, 1)
    assert {"state", "replicas", "last_cold_start", "last_error", "cold_loads", "last_cold_load_ms", "warm_hits",
            "last_warm_lookup_ms", "evictions", "size_bytes"} == set(fe["model"])
    assert (experiments["gen"]["state"], experiments["gen"]["replicas"], experiments["gen"]["model"]) == ("cold", 0, {})
    window = client.get("/health").json()["scaling"]["experiments"]["fe"]
    assert (window["state"], window["replicas"], window["last_cold_start"]) == ("warm", 1, None)


def test_metrics_parse_as_prometheus(client: TestClient) -> None:
    client.post("/predict/fe", json={"inputs": "x"})
    client.post("/predict/fe", json={"inputs": "x"})
    client.post("/predict/fe", json={"inputs": 5})
    client.post("/predict/bad-sha", json={"inputs": "x"})
    text = client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("hybrid_requests_total", (("experiment", "fe"), ("status", "200")))] == 2
    assert samples[("hybrid_requests_total", (("experiment", "bad-sha"), ("status", "503")))] == 1
    assert samples[("hybrid_request_latency_seconds_count", (("experiment", "fe"),))] == 2
    assert samples[("hybrid_cold_loads_total", (("experiment", "fe"),))] == 1
    assert samples[("hybrid_cached_models", ())] == 1
    assert samples[("hybrid_scaledown_window_seconds", (("experiment", "fe"),))] == 1800


def test_openapi_docs_are_on(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert "/predict/{experiment_id}" in client.get("/openapi.json").json()["paths"]

"""The HTTP contract every backend's app must meet, run against each of them."""

from __future__ import annotations

import math
from typing import Any

import httpx


def check_contract(client: httpx.Client, experiment: str = "fe") -> dict[str, Any]:
    """Same answers whatever the backend: outputs, errors, /health and /experiments shapes."""
    response = client.post(f"/predict/{experiment}", json={"inputs": ["hello world"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["experiment_id"] == experiment and body["task"] == "feature-extraction"
    assert len(body["outputs"]) == 1 and len(body["outputs"][0]) == 32
    assert math.isclose(math.hypot(*body["outputs"][0]), 1.0, rel_tol=1e-4)
    assert set(body["timing"]) == {"queue_ms", "load_ms", "inference_ms", "total_ms"}
    assert isinstance(body["cold_load"], bool)
    assert body["scaledown_window_s"] in (900, 1800) or body["scaledown_window_s"] > 0

    missing = client.post("/predict/no-such-experiment", json={"inputs": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "unknown_experiment"
    invalid = client.post(f"/predict/{experiment}", json={"inputs": 5})
    assert invalid.status_code == 422 and invalid.json()["error"]["type"] == "invalid_request"
    bad_param = client.post(f"/predict/{experiment}", json={"inputs": "x", "parameters": {"top_k": 1}})
    assert bad_param.status_code == 422 and "top_k" in bad_param.json()["error"]["message"]

    health = client.get("/health").json()
    assert health["status"] == "ok" and health["authentication"]["mode"] in ("development", "production")
    window = health["scaling"]["experiments"][experiment]
    assert window["scaledown_window_s"] == body["scaledown_window_s"] or window["scaledown_window_s"] > 0
    assert {"reason", "idle_s", "state", "replicas"} <= set(window)
    experiments = {e["id"]: e for e in client.get("/experiments").json()}
    assert {"id", "state", "replicas", "scaledown_window_s", "window_reason", "idle_s"} <= set(experiments[experiment])
    assert "hybrid_requests_total" in client.get("/metrics").text
    return body

"""The HTTP contract every backend's app must meet, run against each of them."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import httpx

from core.keepwarm.controller import AppliedWindow


def check_contract(client: httpx.Client, experiment: str = "fe", base_window_s: int = 900) -> dict[str, Any]:
    """Same answers whatever the backend: outputs, errors, /health and /experiments shapes. The
    experiment must not have been requested before: its first request is isolated (base window)."""
    response = client.post(f"/predict/{experiment}", json={"inputs": ["hello world"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["experiment_id"] == experiment and body["task"] == "feature-extraction"
    assert len(body["outputs"]) == 1 and len(body["outputs"][0]) == 32
    assert math.isclose(math.hypot(*body["outputs"][0]), 1.0, rel_tol=1e-4)
    assert set(body["timing"]) == {"queue_ms", "load_ms", "inference_ms", "total_ms"}
    assert body["cold_load"] is True  # its first request waited for the model
    assert (body["scaledown_window_s"], body["window_reason"]) == (base_window_s, "isolated")

    missing = client.post("/predict/no-such-experiment", json={"inputs": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "unknown_experiment"
    invalid = client.post(f"/predict/{experiment}", json={"inputs": 5})
    assert invalid.status_code == 422 and invalid.json()["error"]["type"] == "invalid_request"
    bad_param = client.post(f"/predict/{experiment}", json={"inputs": "x", "parameters": {"top_k": 1}})
    assert bad_param.status_code == 422 and "top_k" in bad_param.json()["error"]["message"]

    health = client.get("/health").json()
    assert health["status"] == "ok" and health["authentication"]["mode"] in ("development", "production")
    window = health["scaling"]["experiments"][experiment]
    assert (window["scaledown_window_s"], window["reason"]) == (base_window_s, "isolated")  # rejected requests do not count
    assert {"reason", "idle_s", "state", "replicas"} <= set(window)
    applied = window["applied"]
    assert set(applied) == {f.name for f in fields(AppliedWindow)} | {"applied_at_iso"}  # one shape on every backend
    cost = health["cost"]  # the ledger's price on every backend; the seconds where the backend reports them
    assert cost["price"]["currency"] == "USD" and isinstance(cost["measured"], bool)
    assert cost["measured"] or "does not report" in cost["why"]
    assert (applied["window_s"], applied["reason"]) == (base_window_s, "isolated")
    experiments = {e["id"]: e for e in client.get("/experiments").json()}
    assert {"id", "state", "replicas", "scaledown_window_s", "window_reason", "idle_s"} <= set(experiments[experiment])
    assert (experiments[experiment]["scaledown_window_s"], experiments[experiment]["window_reason"]) == (base_window_s, "isolated")
    assert "hybrid_requests_total" in client.get("/metrics").text
    return body

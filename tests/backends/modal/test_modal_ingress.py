"""The Modal ingress's answers that depend on time: a cold start longer than Modal's web limit, and
which requests report that they waited for a container to start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import backends.modal_backend.ingress as ingress_module
from backends.modal_backend.ingress import build_ingress_app
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.registry_sync import sync_registry
from backends.modal_backend.state_store import ModalDictStore
from core.serving.registry import Registry
from core.serving.remote import answered_prediction
from core.serving.worker import RemoteWorker
from backends.modal_backend.settings import load_modal_settings
from tests.backends.modal.modal_harness import StrictDict


async def no_poke() -> None:
    return None


def seeded(registry: Registry) -> ModalDictStore:
    """Shared state holding `registry`, as `hybrid-serve deploy` seeds it."""
    store = ModalDictStore(StrictDict())
    asyncio.run(sync_registry(DictRegistrySource(store, Path(".")), registry))
    return store


def test_a_cold_start_past_modals_web_limit_is_a_503_with_retry_after(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Modal turns a web request still waiting at 150 s into a redirect that curl and httpx do not
    follow: the ingress answers first, and says when to come back (the container keeps starting)."""
    monkeypatch.setattr(ingress_module, "MODAL_WEB_WAIT_S", 0.3)

    async def starting_forever(*_: Any) -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    settings = load_modal_settings(env_file=None, registry_path=registry_file)  # HYBRID_COLD_START_TIMEOUT_S = 300
    app = build_ingress_app(settings, starting_forever, seeded(Registry.load(registry_file)), no_poke)
    with TestClient(app) as client:
        response = client.post("/predict/fe", json={"inputs": "x"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert "still starting" in response.json()["error"]["message"]


def test_every_request_that_waited_for_the_start_says_so_and_the_start_counts_once(registry_file: Path) -> None:
    registry = Registry.load(registry_file)
    worker = RemoteWorker(load_modal_settings(env_file=None), registry.get("fe"))  # type: ignore[arg-type]
    before = time.time() - 0.1  # two requests arrived while the container was starting
    worker.load()
    after = time.time() + 0.1  # one arrived once it was ready

    async def answers() -> list[Any]:
        return [answered_prediction(await worker.predict(["x"], _params(), at), at)
                for at in (before, before, after)]

    first, second, third = asyncio.run(answers())
    assert first.cold_load and first.cold_start is not None and first.cold_start.first
    assert second.cold_load and second.cold_start is not None and not second.cold_start.first
    assert not third.cold_load and third.cold_start is None
    assert first.cold_start.model_load_s > 0 and first.load_ms >= first.cold_start.model_load_s * 1000


def _params() -> Any:
    from core.serving.parameters import FeatureExtractionParams

    return FeatureExtractionParams()


def test_a_containers_measured_start_reaches_health_and_the_reconciler(registry_file: Path) -> None:
    """The container's first answer says it started 40 s after the request arrived: the ingress keeps
    that as the experiment's cold start (`/health`, `/experiments`) and publishes it with its arrivals,
    where the reconciler takes it in (the pre-warm lead and the plans' price: test_modal_reconciler)."""
    registry = Registry.load(registry_file)
    worker = RemoteWorker(load_modal_settings(env_file=None), registry.get("fe"))  # type: ignore[arg-type]
    worker.load()

    async def slow_start(pool: Any, inputs: list[str], params: Any, request_at: float) -> dict[str, Any]:
        worker.started_at, worker.ready_at = request_at + 3, request_at + 40  # as the container measured it
        return await worker.predict(inputs, params, request_at)

    settings = load_modal_settings(env_file=None, registry_path=registry_file, policy_name="adaptive")
    store = seeded(registry)
    app = build_ingress_app(settings, slow_start, store, no_poke, flush_s=0.05)
    with TestClient(app) as client:
        answer = client.post("/predict/fe", json={"inputs": "x"})
        client.post("/predict/fe", json={"inputs": "x"})  # not its first answer: no other measurement
        window = client.get("/health").json()["scaling"]["experiments"]["fe"]
        row = {r["id"]: r for r in client.get("/experiments").json()}["fe"]
        time.sleep(0.2)  # the flush
        client.get("/health")
    assert answer.status_code == 200 and answer.json()["cold_load"] is True
    assert window["cold_start_s"] == pytest.approx(40, abs=0.5) and row["cold_start_s"] == window["cold_start_s"]
    assert "measured" in window["detail"]
    batches = [entry["batch"] for key in asyncio.run(store.keys()) if key.startswith("arrivals")
               for entry in asyncio.run(store.get(key))["batches"]]
    assert [round(b["cold_start_s"]) for b in batches if b["cold_start_s"] is not None] == [40]

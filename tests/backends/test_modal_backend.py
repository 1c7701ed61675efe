"""Modal backend, offline: the app file, its settings-fed decorators, the live-window controller,
shared activity, and the same HTTP contract as the local backends. Only Modal's network calls
(`update_autoscaler`, the model pool's `.remote`, `modal.Dict` get/put) are replaced, by small fakes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backends.modal_backend.deploy_config import deploy_config
from backends.modal_backend.ingress import build_ingress_app
from backends.modal_backend.live_windows import LiveWindowController
from backends.modal_backend.shared_activity import SharedActivityTracker
from core.http.app import build_inprocess_app
from core.keepwarm.decision import WindowDecision, WindowReason
from core.keepwarm.hybrid import HybridParams, hybrid_window
from core.serving.registry import Registry
from core.serving.worker import RemoteWorker
from core.settings import load_settings
from tests.conftest import REPO_ROOT, FakeClock, activity_of
from tests.contract import check_contract

TOKEN_ID, TOKEN_SECRET = "ak-M0dalT0kenIdXyZ987", "as-M0dalT0kenSecretQwE654"
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
import json
import backends.modal_backend.inference_api as api
print(json.dumps({"options": api.config.model_options(), "concurrent": api.config.concurrent_inputs,
                  "proxy_auth": api.config.proxy_auth, "env": api.config.container_env,
                  "packages": api.config.packages, "app": api.app.name}))
"""


def import_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import inference_api.py in a fresh interpreter whose sockets refuse to connect."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    full.update(env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=120)


def test_importing_the_app_makes_no_network_call_and_prints_the_mode(tmp_path: Path) -> None:
    proc = import_app(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "🔧 Development mode: Using web authentication"
    assert json.loads(proc.stdout.splitlines()[1])["app"] == "hybrid-serve"


def test_decorator_arguments_come_from_the_settings(tmp_path: Path) -> None:
    proc = import_app(
        tmp_path, MODAL_GPU="A10G", MODAL_MAX_CONTAINERS="3", MODAL_BASE_WARM_TIME="120", MODAL_CONCURRENT_INPUTS="4",
        HYBRID_MEMORY_SNAPSHOT="true", HYBRID_PROXY_AUTH="true", MODAL_APP_NAME="exp-serving",
        MODAL_TOKEN_ID=TOKEN_ID, MODAL_TOKEN_SECRET=TOKEN_SECRET,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "🚀 Production mode: Using Modal token ID and secret"
    out = json.loads(proc.stdout.splitlines()[1])
    assert out["options"] == {"gpu": "A10G", "max_containers": 3, "scaledown_window": 120,
                              "enable_memory_snapshot": True, "timeout": 600}
    assert (out["concurrent"], out["proxy_auth"], out["app"]) == (4, True, "exp-serving")
    assert out["env"]["MODAL_BASE_WARM_TIME"] == "120" and out["env"]["HYBRID_REGISTRY"].startswith("/root/")
    assert all("==" in p for p in out["packages"]) and any(p.startswith("torch==2.13") for p in out["packages"])
    for secret in (TOKEN_ID, TOKEN_SECRET):  # tokens never reach the image
        assert secret[4:12] not in proc.stdout


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("MODAL_BASE_WARM_TIME", "1", "2..3600"),
    ("MODAL_MAX_CONTAINERS", "0", "≥ 1"),
    ("MODAL_EXTENSION_TIME", "3599", "≤ 3600"),
])
def test_out_of_range_settings_fail_at_import(tmp_path: Path, variable: str, value: str, allowed: str) -> None:
    proc = import_app(tmp_path, **{variable: value})
    assert proc.returncode != 0
    assert "SettingsError" in proc.stderr and variable in proc.stderr and allowed in proc.stderr


def test_cpu_only_deploy() -> None:
    config = deploy_config(load_settings(env_file=None, modal_gpu="none"))
    assert config.model_options()["gpu"] is None and config.container_env["MODAL_GPU"] == "none"


# --- live windows ------------------------------------------------------------------------------------
class FakeAutoscaler:
    """Stands for `ExperimentModel(experiment_id=E).update_autoscaler(scaledown_window=W)`."""

    def __init__(self, clock: FakeClock, failures: int = 0) -> None:
        self.calls: list[tuple[str, int, float]] = []
        self.min_containers: list[tuple[str, int | None, float]] = []
        self.failures = failures
        self.clock = clock

    async def __call__(self, experiment_id: str, window_s: int, min_containers: int | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Modal API unreachable")
        self.calls.append((experiment_id, window_s, self.clock.now))
        self.min_containers.append((experiment_id, min_containers, self.clock.now))


def decision(window: int) -> WindowDecision:
    return WindowDecision(window, WindowReason.RECENT_ACTIVITY if window > 900 else WindowReason.ISOLATED, "")


def controller(clock: FakeClock, update: FakeAutoscaler, interval: float = 10) -> LiveWindowController:
    return LiveWindowController(update, "deploy-1", min_interval_s=interval, retry_s=5, clock=clock, sleep=clock.sleep)


def test_applies_the_right_window_per_experiment_and_never_twice_unchanged() -> None:
    clock = FakeClock()
    update = FakeAutoscaler(clock)
    windows = controller(clock, update)

    async def scenario() -> None:
        windows.apply("a", decision(900))
        windows.apply("b", decision(1800))
        await windows.drain()
        for _ in range(5):
            windows.apply("a", decision(900))
            windows.apply("b", decision(1800))
        await windows.drain()

    asyncio.run(scenario())
    assert sorted((e, w) for e, w, _ in update.calls) == [("a", 900), ("b", 1800)]
    assert windows.in_force()["a"].window_s == 900 and windows.in_force()["b"].applied_at == 1000.0


def test_bursts_are_rate_limited_and_the_latest_window_wins() -> None:
    clock = FakeClock()
    update = FakeAutoscaler(clock)
    windows = controller(clock, update, interval=10)

    async def scenario() -> None:
        windows.apply("a", decision(900))
        await asyncio.sleep(0)  # the first call goes out at once
        for window in (1800, 900, 1800, 1200):  # a burst within the interval
            windows.apply("a", decision(window))
        await windows.drain()

    asyncio.run(scenario())
    assert [(w, t) for _, w, t in update.calls] == [(900, 1000.0), (1200, 1010.0)]


def test_a_failing_call_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    update = FakeAutoscaler(clock, failures=2)
    windows = controller(clock, update, interval=0)
    caplog.set_level(logging.WARNING)

    async def scenario() -> None:
        windows.apply("a", decision(1800))
        await windows.drain()

    asyncio.run(scenario())
    assert [(e, w) for e, w, _ in update.calls] == [("a", 1800)]
    assert windows.failures == 2 and update.calls[0][2] == 1010.0  # two retries, 5 s apart
    assert "update_autoscaler(a, scaledown_window=1800) failed" in caplog.text


def test_windows_are_reapplied_after_a_redeploy() -> None:
    clock = FakeClock()
    update = FakeAutoscaler(clock)
    windows = controller(clock, update, interval=0)

    async def scenario() -> None:
        windows.apply("a", decision(1800))
        await windows.drain()
        windows.on_redeploy("deploy-2")  # a deploy reset every override
        await windows.drain()
        windows.on_redeploy("deploy-2")  # same deployment: nothing to do
        await windows.drain()

    asyncio.run(scenario())
    assert [(e, w) for e, w, _ in update.calls] == [("a", 1800), ("a", 1800)]
    assert windows.in_force()["a"].deployment == "deploy-2"


# --- shared activity ---------------------------------------------------------------------------------
def dict_store() -> tuple[dict[str, float], Any, Any]:
    """A dict standing for the `modal.Dict` (its async get/put are the network calls replaced)."""
    store: dict[str, float] = {}

    async def get(key: str) -> Any:
        return store.get(key)

    async def put(key: str, value: float) -> None:
        store[key] = value

    return store, get, put


def test_activity_seen_by_another_ingress_counts_as_recent() -> None:
    store, get, put = dict_store()
    clock = FakeClock()
    first = SharedActivityTracker(300, 2100, get, put, clock=clock)
    second = SharedActivityTracker(300, 2100, get, put, clock=clock)
    params = HybridParams(900, 900, 300)

    async def scenario() -> None:
        first.record_request("e")
        await first.sync()
        clock.now += 60
        alone = second.record_request("e")  # decided before the exchange: local knowledge only
        await second.sync()
        assert hybrid_window(alone, params).reason is WindowReason.ISOLATED
        clock.now += 60
        assert hybrid_window(second.record_request("e"), params).window_s == 1800
        await second.sync()  # published: 1120
        clock.now += 30
        first.record_request("e")  # 1150: first learns of second's 1120 on this exchange
        await first.sync()
        clock.now += 10
        second.record_request("e")  # 1160: second learns of first's 1150
        await second.sync()

    asyncio.run(scenario())
    one, two = activity_of(first, "e"), activity_of(second, "e")
    assert (one.last_request, one.previous_request) == (1150.0, 1120.0)  # type: ignore[union-attr]
    assert (two.last_request, two.previous_request) == (1160.0, 1150.0)  # type: ignore[union-attr]
    assert store["e"] == 1160.0


# --- the app itself, against the shared contract --------------------------------------------------------
def modal_app(registry_file: Path, update: Any = None, **overrides: Any):  # type: ignore[no-untyped-def]
    settings = load_settings(env_file=None, registry_path=registry_file, **overrides)
    registry = Registry.load(registry_file)
    workers: dict[str, RemoteWorker] = {}
    calls: list[str] = []

    async def call_model(experiment_id: str, inputs: list[str], params: Any) -> dict[str, Any]:
        """Stands for `ExperimentModel(experiment_id=E).predict.remote.aio(...)`: runs the same worker locally."""
        calls.append(experiment_id)
        if experiment_id not in workers:
            workers[experiment_id] = RemoteWorker(settings, registry.get(experiment_id))  # type: ignore[arg-type]
            await asyncio.to_thread(workers[experiment_id].load)
        return await workers[experiment_id].predict(inputs, params)

    _, get, put = dict_store()
    clock = FakeClock()
    update = update or FakeAutoscaler(clock)
    app = build_ingress_app(settings, registry, call_model, update, get, put, deployment="deploy-1")
    return app, update, calls


def test_modal_app_meets_the_contract(registry_file: Path) -> None:
    app, update, calls = modal_app(registry_file)
    with TestClient(app) as client:
        body = check_contract(client)
        health = client.get("/health").json()
    assert health["backend"] == "modal" and calls[0] == "fe"
    assert health["scaling"]["experiments"]["fe"]["applied"]["window_s"] == body["scaledown_window_s"]
    assert ("fe", body["scaledown_window_s"]) in [(e, w) for e, w, _ in update.calls]


def test_inprocess_app_meets_the_contract_with_the_same_outputs(registry_file: Path) -> None:
    with TestClient(build_inprocess_app(load_settings(env_file=None, registry_path=registry_file))) as client:
        local = check_contract(client)
    app, _, _ = modal_app(registry_file)
    with TestClient(app) as client:
        remote = check_contract(client)
    assert remote["outputs"][0] == pytest.approx(local["outputs"][0], abs=1e-6)


def test_requests_are_unaffected_when_update_autoscaler_fails(registry_file: Path) -> None:
    async def broken(experiment_id: str, window_s: int, min_containers: int | None = None) -> None:
        raise ConnectionError("Modal API unreachable")

    app, _, _ = modal_app(registry_file, update=broken)
    with TestClient(app) as client:
        statuses = [client.post("/predict/fe", json={"inputs": "x"}).status_code for _ in range(3)]
        applied = client.get("/health").json()["scaling"]["experiments"]["fe"]["applied"]
    assert statuses == [200, 200, 200] and applied is None


def test_model_errors_cross_the_boundary_with_their_status(registry_file: Path) -> None:
    app, _, _ = modal_app(registry_file)
    with TestClient(app) as client:
        response = client.post("/predict/bad-sha", json={"inputs": "x"})
    assert response.status_code == 503 and "sha256" in response.json()["error"]["message"]


def test_bearer_token_protects_the_api(registry_file: Path) -> None:
    app, _, _ = modal_app(registry_file, api_token="s3cret-token-value")
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        denied = client.post("/predict/fe", json={"inputs": "x"})
        assert denied.status_code == 401 and denied.json()["error"]["type"] == "unauthorized"
        assert client.post("/predict/fe", json={"inputs": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/predict/fe", json={"inputs": "x"}, headers={"Authorization": "Bearer s3cret-token-value"})
        assert ok.status_code == 200
        assert "s3cret" not in client.get("/health").text


def test_a_prewarm_plan_scales_down_then_raises_and_lowers_min_containers() -> None:
    clock = FakeClock()
    update = FakeAutoscaler(clock)
    windows = LiveWindowController(update, "deploy-1", min_interval_s=0, retry_s=5, prewarm_lead_s=60,
                                   clock=clock, sleep=clock.sleep)
    plan = WindowDecision(300, WindowReason.LEARNED, "pre-warm after 10 min, keep 5 min", prewarm_after_s=600)

    async def scenario() -> None:
        windows.apply("cron", plan)
        await windows.drain()
        await asyncio.gather(*windows._prewarms.values())

    asyncio.run(scenario())
    assert update.calls[0] == ("cron", 2, 1000.0)  # scale down right after the request (Modal's minimum window)
    assert [(m, t) for _, m, t in update.min_containers if m is not None] == [(1, 1540.0), (0, 1900.0)]
    assert windows.in_force()["cron"].min_containers == 0


def test_a_new_request_cancels_a_pending_prewarm() -> None:
    clock = FakeClock()
    update = FakeAutoscaler(clock)
    windows = LiveWindowController(update, "deploy-1", min_interval_s=0, prewarm_lead_s=60, clock=clock, sleep=clock.sleep)

    async def scenario() -> None:
        windows.apply("cron", WindowDecision(300, WindowReason.LEARNED, "", prewarm_after_s=600))
        await asyncio.sleep(0)
        windows.apply("cron", decision(900))  # the next request arrived earlier than planned
        await windows.drain()
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert all(m is None for _, m, _ in update.min_containers)
    assert update.calls[-1][:2] == ("cron", 900)

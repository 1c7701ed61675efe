"""The Modal app's container code run as Modal runs it: from the file system its images upload, with
the image's environment, network refused — only Modal's network calls replaced (tests/backends/
modal_harness.py). Each test here failed on the first Modal backend, whose fakes stood where its
defects were."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.backends.modal.conftest import ModalContainer, modal_container
from tests.contract import check_contract
from tests.sse import read_sse

pytestmark = pytest.mark.long  # scheduled early (tests/conftest.py)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, modal_registry: Path) -> Iterator[ModalContainer]:
    """One deployment with the default settings (public, for plain requests), for the tests below."""
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true"}
    with modal_container(tmp_path_factory.mktemp("modal"), env) as container:
        yield container


def test_the_containers_start_and_serve_the_shared_contract(box: ModalContainer) -> None:
    """The registry is read where the image puts it (`add_local_python_source` ships only .py files);
    the ingress serves the same HTTP contract as the local backends; a container's first request
    reports its cold start; the ingress never imports torch."""
    assert box.ready["module"].startswith(str(box.root)) and box.ready["torch_loaded"] is False
    with box.client() as client:
        assert client.get("/health").json()["backend"] == "modal"
        assert box.command("report")["torch_loaded"] is False  # the ingress alone: no torch
        body = check_contract(client, "fe")
        assert body["timing"]["load_ms"] > 0
        warm = client.post("/predict/fe", json={"inputs": "again"}).json()
        assert warm["cold_load"] is False
        refused = client.post("/predict/bad-sha", json={"inputs": "x"})
        assert refused.status_code == 503 and "sha256" in refused.json()["error"]["message"]
    assert box.command("report")["commits"] == 0  # nothing was downloaded: the volume is not committed


def test_a_stream_comes_from_the_generator_method_token_by_token_and_a_hang_up_cancels_it(box: ModalContainer) -> None:
    """`"stream": true` reaches the model container's generator method (`stream.remote_gen`), each item
    crossing cloudpickle; a client that hangs up has the input cancelled by its function call's id
    (closing `remote_gen` alone would leave the container generating to the end)."""
    body = {"inputs": "hello world", "parameters": {"max_new_tokens": 10}, "stream": True}
    with box.client() as client:
        with client.stream("POST", "/predict/gen", json=body) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            events = list(read_sse(response))
        names = [name for name, _ in events]
        assert names[0] == "start" and names[-1] == "end" and set(names[1:-1]) == {"token"}, names
        assert events[0][1]["cold_load"] is True  # a container started for it
        tokens = "".join(data["text"] for name, data in events if name == "token")
        assert events[-1][1]["generated_text"] == "hello world" + tokens
        plain = client.post("/predict/gen", json={**body, "stream": False}).json()
        assert plain["outputs"][0]["generated_text"] == events[-1][1]["generated_text"]
        box.command("stream-pace 0.05")  # a slow GPU: the 100 tokens would take 5 s
        try:
            with client.stream("POST", "/predict/gen", json={**body, "parameters": {"max_new_tokens": 100}}) as response:
                assert next(read_sse(response))[0] == "start"  # then the client hangs up
            time.sleep(1)
        finally:
            box.command("stream-pace 0")
    streams = [c for c in box.command("report")["calls"] if c["experiment"] == "gen" and c.get("stream")]
    assert len(streams) == 2 and all(c.get("closed") for c in streams), streams
    assert streams[0]["done"] and not streams[0].get("cancelled"), streams
    assert streams[1].get("cancelled") and not streams[1]["done"] and streams[1]["items"] < 40, streams


def test_each_model_container_publishes_its_life_and_the_ingress_adds_them_up(box: ModalContainer) -> None:
    """The cost ledger on Modal: the model container counts its own cold start (from its process's start)
    and busy time, publishes them under its own key, and `/experiments/{id}` shows them."""
    with box.client() as client:
        assert client.post("/predict/fe", json={"inputs": "counted"}).status_code == 200
        deadline = time.time() + 30
        while True:  # published after the request, read by the ingress at most every 5 s
            cost = client.get("/experiments/fe").json()["cost"]
            if cost["measured"] and cost["since_start"]["container_seconds"]["busy"] > 0:
                break
            assert time.time() < deadline, cost
            time.sleep(0.5)
        keys = box.command("report")["keys"]
    seconds = cost["since_start"]["container_seconds"]
    assert seconds["cold_start"] > 0 and cost["containers"] == 1 and cost["price"]["gpu"] == "T4", cost
    assert [k for k in keys if k.startswith("usage/fe/")], keys  # its own key: one writer per key


def test_the_ingress_records_traffic_on_the_traffic_volume(box: ModalContainer) -> None:
    """The image's HYBRID_TRAFFIC_DIR is the traffic volume's mount (never the container's own disk, gone
    with it): the ingress records each request there, without its inputs, and `/traffic` serves them."""
    with box.client() as client:
        assert client.post("/predict/fe", json={"inputs": "recorded-not-kept"}).status_code == 200
        served = [json.loads(line) for line in client.get("/traffic", params={"experiment": "fe"}).text.splitlines()]
    assert {r["event"] for r in served} <= {"request", "cold_start"}, served  # the box's earlier tests' too
    assert served[-1]["status"] == 200 and served[-1]["inputs"] == 1 and served[-1]["duration_s"] > 0
    on_volume = list((box.root / "traffic").glob("*.jsonl"))
    assert on_volume and b"recorded-not-kept" not in b"".join(p.read_bytes() for p in on_volume)


def test_the_dashboard_and_the_docs_are_served_from_the_image(box: ModalContainer) -> None:
    """`add_local_python_source` ships only .py files: the dashboard's page, script and style sheet are
    shipped beside them, and the docs' files come from the ingress image's packages."""
    with box.client() as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert client.get("/dashboard/data").json()["total"] >= 1
        docs = client.get("/docs")
        assert docs.status_code == 200
        for asset in ("dashboard.js", "dashboard.css"):
            assert (box.root / "root" / "core" / "http" / "static" / asset).is_file()


def test_windows_are_applied_by_the_reconciler_from_published_arrivals(box: ModalContainer) -> None:
    with box.client() as client:
        client.post("/predict/fe-2", json={"inputs": "one"})
        client.post("/predict/fe-2", json={"inputs": "two"})  # recent activity: base + extension
        client.post("/predict/fe-l4", json={"inputs": "three"})
        time.sleep(3)  # the ingress publishes its arrivals every 2 s and pokes the reconciler
        report = box.command("reconcile")
        applied = client.get("/health").json()["scaling"]["experiments"]["fe-2"]["applied"]
    updates = [{k: v for k, v in update.items() if k not in ("version", "max_containers")} for update in report["updates"]]
    assert all(1 <= u["max_containers"] <= 10 for u in report["updates"] if u["max_containers"] is not None)
    assert {"experiment": "fe-2", "gpu": None, "scaledown_window": 1800, "min_containers": 0} in updates
    assert {"experiment": "fe-l4", "gpu": "L4", "scaledown_window": 900, "min_containers": 0} in updates
    assert (applied["window_s"], applied["reason"], applied["min_containers"]) == (1800, "recent-activity", 0)
    assert {"activity/fe-2", "activity/fe-l4", "applied", "cursors"} <= set(report["keys"])


def test_the_deployment_runs_at_most_modal_max_containers_across_experiments(tmp_path: Path, modal_registry: Path) -> None:
    """MODAL_MAX_CONTAINERS=2 caps the deployment, not each pool: two experiments' containers hold both
    slots; a request that would start a third is a JSON 503 with Retry-After naming the setting (the
    containers are seen by their heartbeats in the shared state); the reconciler caps each pool at what
    it runs (nothing is free); /health counts each experiment's containers."""
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true", "MODAL_MAX_CONTAINERS": "2"}
    with modal_container(tmp_path, env) as box, box.client() as client:
        assert client.post("/predict/fe", json={"inputs": "a"}).status_code == 200
        assert client.post("/predict/fe-2", json={"inputs": "b"}).status_code == 200
        refused = client.post("/predict/clf", json={"inputs": "c"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30", refused.text
        assert "all 2 containers of the deployment (MODAL_MAX_CONTAINERS)" in refused.json()["error"]["message"]
        assert client.post("/predict/fe", json={"inputs": "warm"}).status_code == 200  # a running pool still serves
        time.sleep(2.5)  # the ingress reads the heartbeats at most every 2 s
        experiments = client.get("/health").json()["scaling"]["experiments"]
        report = box.command("reconcile")
    assert (experiments["fe"]["replicas"], experiments["fe-2"]["replicas"]) == (1, 1)
    assert report["starts"] == 2 and len([k for k in report["keys"] if k.startswith("live/")]) == 2
    capped = {u["experiment"]: u["max_containers"] for u in report["updates"] if u["max_containers"] is not None}
    # 'clf' runs none and gets Modal's least limit, 1 (0 would mean none): the ingress holds it at zero
    assert capped == {"fe": 1, "fe-2": 1, "clf": 1}


def test_a_memory_snapshot_loads_on_the_cpu_and_moves_to_the_gpu_after_restore(tmp_path: Path, modal_registry: Path) -> None:
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true", "HYBRID_MEMORY_SNAPSHOT": "true"}
    with modal_container(tmp_path, env) as box:
        with box.client() as client:
            assert client.post("/predict/fe", json={"inputs": "x"}).status_code == 200
        devices = box.command("report")["devices"]
    assert devices[0] == "cpu" and "cuda" in devices[1:]  # snapshot phase: no GPU; restored: to the GPU


def test_a_gpu_snapshot_loads_on_the_gpu_before_the_snapshot(tmp_path: Path, modal_registry: Path) -> None:
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true", "HYBRID_MEMORY_SNAPSHOT": "true",
           "HYBRID_GPU_SNAPSHOT": "true"}
    with modal_container(tmp_path, env) as box:
        with box.client() as client:
            assert client.post("/predict/fe", json={"inputs": "x"}).status_code == 200
        devices = box.command("report")["devices"]
    assert devices and devices[0] == "cuda"


def test_the_bearer_token_protects_health_but_its_liveness(tmp_path: Path, modal_registry: Path) -> None:
    """With a token from a modal.Secret: Modal injects it into the ingress's environment."""
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_API_TOKEN_SECRET": "hybrid-serve-api"}
    with modal_container(tmp_path, env, secret_env={"HYBRID_API_TOKEN": "s3cret-token-value"}) as box:
        with box.client() as client:
            assert client.get("/health").json() == {"status": "ok"}  # liveness only: no experiment, no setting
            assert client.post("/predict/fe", json={"inputs": "x"}).status_code == 401
            auth = {"Authorization": "Bearer s3cret-token-value"}
            assert client.post("/predict/fe", json={"inputs": "x"}, headers=auth).status_code == 200
            assert "fe" in client.get("/health", headers=auth).json()["scaling"]["experiments"]


def test_a_plain_modal_deploy_serves_the_shipped_registry(tmp_path: Path, modal_registry: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing seeds the Dict before the container starts (a plain `modal deploy`): the container seeds
    it from the image's registry file; a Dict already seeded by this deployment is left as it is."""
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_DEPLOYMENT": "dep-plain", "HYBRID_PUBLIC_ENDPOINT": "true"}
    for folder in ("first", "later"):
        (tmp_path / folder).mkdir()
    with modal_container(tmp_path / "first", env) as box:
        with box.client() as client:
            assert client.post("/predict/fe", json={"inputs": "x"}).status_code == 200
        report = box.command("report")
    assert "registry-seeded" in report["keys"] and {"fe", "fe-2"} <= set(report["registry"])
    monkeypatch.setenv("HARNESS_SEEDED", "dep-plain")  # seeded by this deployment, every entry removed live since
    with modal_container(tmp_path / "later", env) as box:
        with box.client() as client:
            assert client.post("/predict/fe", json={"inputs": "x"}).status_code == 404
        assert box.command("report")["registry"] == []


@pytest.mark.parametrize(("tokens", "mode"), [(True, "production"), (False, "development")])
def test_health_reports_the_mode_the_deploy_was_made_in(tmp_path: Path, modal_registry: Path, tokens: bool,
                                                       mode: str) -> None:
    """Tokens rightly never reach a container, so its own settings always look like development mode:
    /health reports the mode of the deploy instead."""
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true"}
    if tokens:
        env.update(MODAL_TOKEN_ID="ak-M0dalT0kenIdXyZ987", MODAL_TOKEN_SECRET="as-M0dalT0kenSecretQwE654")
    with modal_container(tmp_path, env) as box:
        with box.client() as client:
            health = client.get("/health")
    assert health.json()["authentication"]["mode"] == mode
    assert "M0dalT0ken" not in health.text


def test_a_cold_start_past_the_web_limit_keeps_loading_and_the_retry_finds_it_warm(
        tmp_path: Path, modal_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Modal ends a web request at 150 s, so the ingress answers 503 + Retry-After before that (scaled
    down here: the limit 1 s, the container's start 4 s). The container goes on starting — the input
    stays with it — and the retry is served by that container, warm: one container started."""
    monkeypatch.setenv("HARNESS_WEB_WAIT_S", "1")
    monkeypatch.setenv("HARNESS_START_DELAY_S", "4")
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true", "HYBRID_COLD_START_TIMEOUT_S": "60"}
    with modal_container(tmp_path, env) as box:
        with box.client() as client:
            first = client.post("/predict/fe", json={"inputs": "x"})
            assert first.status_code == 503, first.text
            assert first.headers["Retry-After"] == "30" and "keeps starting" in first.json()["error"]["message"]
            deadline = time.monotonic() + 60
            while not all(call["done"] for call in box.command("report")["calls"]):  # the first input, answered apart
                assert time.monotonic() < deadline, "the container never finished starting"
                time.sleep(0.2)
            retry = client.post("/predict/fe", json={"inputs": "x"})
        report = box.command("report")
    assert retry.status_code == 200, retry.text
    assert retry.json()["cold_load"] is False, "the retry found the container warm"
    assert report["starts"] == 1 and len(report["calls"]) == 2


def test_a_container_whose_token_secret_gave_no_token_refuses_everything(tmp_path: Path, modal_registry: Path) -> None:
    """Proxy auth is off when a token secret is named: a container that finds no token must not serve
    open. Every request answers 503 in the error shape, naming neither the secret nor the key; the log says why."""
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_API_TOKEN_SECRET": "hybrid-serve-api"}
    with modal_container(tmp_path, env, secret_env={}) as box:
        with box.client() as client:
            answers = [client.get("/health"), client.post("/predict/fe", json={"inputs": "x"}), client.get("/experiments"),
                       client.get("/dashboard"), client.get("/docs")]
        calls = box.command("report")["calls"]
    for answer in answers:
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "misconfigured", answer.text
        assert "hybrid-serve-api" not in answer.text and "HYBRID_API_TOKEN" not in answer.text
    log = "".join(box.early)
    assert "refusing to serve" in log and "hybrid-serve-api" in log and "HYBRID_API_TOKEN" in log
    assert not calls, "no model was called"


def test_weights_are_committed_only_when_a_load_downloaded_something(tmp_path: Path, modal_registry: Path,
                                                                     monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Committing on every cold start conflicts between containers and failed the container: now the
    volume is committed only when the cache changed, and a failed commit is only logged."""
    from backends.modal_backend.container import ModelContainer
    from backends.modal_backend.pools import pool_key
    from core.serving.registry import Registry
    from backends.modal_backend.settings import load_modal_settings

    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf_home))
    commits: list[int] = []
    settings = load_modal_settings(env_file=None, registry_path=modal_registry)

    registry = Registry.load(modal_registry)
    container = ModelContainer(settings, pool_key(registry.get("fe"), None), commit_weights=lambda: commits.append(1))
    container.load(on_cpu=False)  # a local model: nothing downloaded
    assert commits == []

    def failing_commit() -> None:
        raise RuntimeError("commit conflict")

    downloading = ModelContainer(settings, pool_key(registry.get("clf"), None), commit_weights=failing_commit)
    real_load = downloading.worker.load

    def load_that_downloads(device: str | None = None) -> None:
        (hf_home / "hub").mkdir()
        (hf_home / "hub" / "weights.bin").write_bytes(b"x" * 10)
        real_load(device)

    downloading.worker.load = load_that_downloads  # type: ignore[method-assign]
    downloading.load(on_cpu=False)  # the failing commit does not fail the container
    assert "committing downloaded weights failed" in caplog.text
    assert downloading.worker.engine.cache.cached_ids() == ["clf"]


EXIT_PROBE = """
import asyncio, json, sys
from modal._partial_function import _find_callables_for_obj, _PartialFunctionFlags
from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager
from modal._utils.async_utils import synchronizer
from tests.backends.modal.modal_harness import StrictDict, refuse_network

refuse_network()
_TaskLifecycleManager._singleton = object()  # inside a container: `modal.is_local()` is False
import backends.modal_backend.inference_api as api

api.weights = type("Volume", (), {"commit": lambda self: None})()
api.state = StrictDict()  # the shared state, where the container's heartbeat lives while it runs
obj = synchronizer._translate_in(api.ExperimentModel(experiment_id="fe", definition=sys.argv[1]))
instance = obj._cached_user_cls_instance()
for flag in (_PartialFunctionFlags.ENTER_PRE_SNAPSHOT, _PartialFunctionFlags.ENTER_POST_SNAPSHOT):
    for hook in _find_callables_for_obj(instance, flag).values():
        hook()
predict = _find_callables_for_obj(instance, _PartialFunctionFlags.CALLABLE_INTERFACE)["predict"]
from core.serving.parameters import FeatureExtractionParams
before = asyncio.run(predict(["hello"], FeatureExtractionParams(), None))
beating = [k for k in api.state.data if k.startswith("live/")]
exits = _find_callables_for_obj(instance, _PartialFunctionFlags.EXIT)
for hook in exits.values():
    result = hook()
    if asyncio.iscoroutine(result):
        asyncio.run(result)
after = asyncio.run(predict(["hello"], FeatureExtractionParams(), None))
print(json.dumps({"exits": sorted(exits), "served": "prediction" in before, "before": repr(before)[:300],
                  "after": after["error"].to_plain(), "cached": instance.container.worker.engine.cache.cached_ids(),
                  "beating": beating, "beating_after": [k for k in api.state.data if k.startswith("live/")]}))
"""


def test_the_exit_hook_closes_the_engine_and_later_requests_are_refused(tmp_path: Path, modal_registry: Path) -> None:
    """`@modal.exit` pairs `@modal.enter`: a stopping container releases its model, what still reaches
    it is refused with a 503 instead of running on a half-closed engine, and it stops counting in the
    deployment's containers (its heartbeat goes)."""
    import os
    import subprocess
    import sys

    from backends.modal_backend.pools import pool_key
    from core.serving.registry import Registry
    from tests.conftest import REPO_ROOT

    definition = pool_key(Registry.load(modal_registry).get("fe"), None).definition
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), HYBRID_REGISTRY=str(modal_registry), HYBRID_PUBLIC_ENDPOINT="true",
               HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, definition], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["exits"] == ["close"] and out["served"] is True, out["before"]
    assert out["after"]["kind"] == "overloaded" and out["cached"] == []
    # its heartbeat (the deployment's container count) is there while it runs and goes with it
    assert len(out["beating"]) == 1 and out["beating_after"] == [], out

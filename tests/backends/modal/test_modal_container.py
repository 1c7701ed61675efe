"""The Modal app's container code run as Modal runs it: from the file system its images upload, with
the image's environment, network refused — only Modal's network calls replaced (tests/backends/
modal_harness.py). Each test here failed on the first Modal backend, whose fakes stood where its
defects were."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from tests.backends.modal.conftest import ModalContainer, modal_container
from tests.conftest import make_settings
from tests.contract import check_contract


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


def test_windows_are_applied_by_the_reconciler_from_published_arrivals(box: ModalContainer) -> None:
    with box.client() as client:
        client.post("/predict/fe-2", json={"inputs": "one"})
        client.post("/predict/fe-2", json={"inputs": "two"})  # recent activity: base + extension
        client.post("/predict/fe-l4", json={"inputs": "three"})
        time.sleep(3)  # the ingress publishes its arrivals every 2 s and pokes the reconciler
        report = box.command("reconcile")
        applied = client.get("/health").json()["scaling"]["experiments"]["fe-2"]["applied"]
    updates = [{k: v for k, v in update.items() if k != "version"} for update in report["updates"]]
    assert {"experiment": "fe-2", "gpu": None, "scaledown_window": 1800, "min_containers": 0} in updates
    assert {"experiment": "fe-l4", "gpu": "L4", "scaledown_window": 900, "min_containers": 0} in updates
    assert (applied["window_s"], applied["reason"], applied["min_containers"]) == (1800, "recent-activity", 0)
    assert {"activity/fe-2", "activity/fe-l4", "applied", "cursors"} <= set(report["keys"])


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


def test_weights_are_committed_only_when_a_load_downloaded_something(tmp_path: Path, modal_registry: Path,
                                                                     monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Committing on every cold start conflicts between containers and failed the container: now the
    volume is committed only when the cache changed, and a failed commit is only logged."""
    from backends.modal_backend.container import ModelContainer
    from backends.modal_backend.pools import pool_key
    from core.serving.registry import Registry
    from core.settings import load_settings

    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf_home))
    commits: list[int] = []
    settings = make_settings(registry_path=modal_registry)

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

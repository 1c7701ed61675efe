"""Experiments that come and go on a deployed Modal app, run as Modal runs the containers (the
harness of tests/backends/modal/modal_harness.py: the container's file system from the images' uploads,
network refused, only the Dict and the pools' network calls stood in for): the registry lives in the
shared Dict, is seeded by the deploy's own code, and is changed as `experiments … --modal` changes it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.backends.modal.conftest import ModalContainer, modal_container

FE = {"source": "./models/fe", "task": "feature-extraction"}  # a model directory shipped with the deploy


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, modal_registry: Path) -> Iterator[ModalContainer]:
    env = {"HYBRID_REGISTRY": str(modal_registry), "HYBRID_PUBLIC_ENDPOINT": "true", "HYBRID_REGISTRY_POLL_S": "0.3"}
    with modal_container(tmp_path_factory.mktemp("modal-live"), env) as container:
        yield container


def put(box: ModalContainer, experiment_id: str, **fields: Any) -> dict[str, Any]:
    import json

    return box.command("registry-put " + json.dumps({"id": experiment_id, **fields}))


def until(check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def calls(box: ModalContainer, experiment_id: str) -> list[dict[str, Any]]:
    return [c for c in box.command("report")["calls"] if c["experiment"] == experiment_id]


def reconciled(box: ModalContainer) -> dict[str, Any]:
    time.sleep(2.5)  # the ingress publishes its arrivals every 2 s
    return box.command("reconcile")


def test_the_deploy_seeds_the_shared_registry_and_an_experiment_added_live_serves_at_once(box: ModalContainer) -> None:
    """No redeploy: the entry written a moment ago serves on its very first request."""
    assert box.command("report")["registry"] == ["bad-sha", "clf", "fe", "fe-2", "fe-l4", "gen"]
    with box.client() as client:
        assert client.post("/predict/live-1", json={"inputs": "x"}).status_code == 404
        put(box, "live-1", **FE)
        response = client.post("/predict/live-1", json={"inputs": "x"})
        assert response.status_code == 200, response.text
        assert response.json()["cold_load"] is True
        assert "live-1" in [e["id"] for e in client.get("/experiments").json()]


def test_a_new_model_is_a_new_pool_and_a_request_in_flight_finishes_on_the_old(box: ModalContainer) -> None:
    put(box, "swap", **FE)
    with box.client() as client:
        assert client.post("/predict/swap", json={"inputs": "before"}).status_code == 200
        old = calls(box, "swap")[-1]["version"]
        first = reconciled(box)
        assert any(u["experiment"] == "swap" and u["version"] == old and u["scaledown_window"] > 2 for u in first["updates"])

        box.command("hold")  # the next model call stays in flight
        answers: list[Any] = []
        in_flight = threading.Thread(target=lambda: answers.append(client.post("/predict/swap", json={"inputs": "in flight"})))
        in_flight.start()
        assert until(lambda: any(c.get("held") and not c["done"] for c in calls(box, "swap")))

        put(box, "swap", source="./models/fe-2", task="feature-extraction")  # a new model
        new_versions = until(lambda: (client.post("/predict/swap", json={"inputs": "after"}).status_code == 200 and
                                      {c["version"] for c in calls(box, "swap")} - {old}))
        assert new_versions and len(new_versions) == 1, calls(box, "swap")
        new = next(iter(new_versions))
        held = [c for c in calls(box, "swap") if c.get("held")]
        assert held[0]["version"] == old and not held[0]["done"]  # still in flight while the new pool served

        box.command("release")
        in_flight.join(30)
        assert answers and answers[0].status_code == 200, answers
        assert [c for c in calls(box, "swap") if c.get("held")][0]["done"]

    report = reconciled(box)
    drains = [u for u in report["updates"] if u["experiment"] == "swap" and u["version"] == old
              and (u["scaledown_window"], u["min_containers"]) == (2, 0)]
    assert len(drains) == 1
    assert any(u["experiment"] == "swap" and u["version"] == new and u["scaledown_window"] > 2 for u in report["updates"])
    assert report["applied"]["swap"]["pool"]["definition"].find("./models/fe-2") >= 0
    again = box.command("reconcile")  # drained once, then forgotten
    assert [u for u in again["updates"] if u["version"] == old and u["scaledown_window"] == 2] == drains


def test_a_removed_experiment_answers_404_and_its_pool_is_drained(box: ModalContainer) -> None:
    put(box, "gone", **FE)
    with box.client() as client:
        assert client.post("/predict/gone", json={"inputs": "x"}).status_code == 200
        version = calls(box, "gone")[-1]["version"]
        assert "gone" in reconciled(box)["applied"]
        box.command("registry-remove gone")
        assert until(lambda: client.post("/predict/gone", json={"inputs": "x"}).status_code == 404, 5)
    report = reconciled(box)
    assert {"experiment": "gone", "version": version, "gpu": None, "scaledown_window": 2, "min_containers": 0,
            "max_containers": None} in report["updates"]
    assert "gone" not in report["applied"] and "activity/gone" not in report["keys"] and "registry/gone" not in report["keys"]


def test_a_bad_entry_written_into_the_dict_breaks_no_other_experiment(box: ModalContainer) -> None:
    put(box, "steady", **FE)
    with box.client() as client:
        assert client.post("/predict/steady", json={"inputs": "x"}).status_code == 200
        assert "steady" in reconciled(box)["applied"]
        box.command('dict-put registry/broken {"source": "ftp://x", "task": "nope"}')
        box.command('dict-put registry/steady {"task": "feature-extraction"}')  # a bad edit of a served one
        put(box, "after-broken", **FE)  # later changes still arrive
        assert until(lambda: client.post("/predict/after-broken", json={"inputs": "x"}).status_code == 200, 5)
        assert client.post("/predict/fe", json={"inputs": "x"}).status_code == 200
        assert client.post("/predict/steady", json={"inputs": "x"}).status_code == 200  # its last good entry
        assert client.post("/predict/broken", json={"inputs": "x"}).status_code == 404
        skipped = client.get("/health").json()["registry"]["skipped"]
    assert set(skipped) == {"broken", "steady"} and "task" in skipped["broken"] and "source" in skipped["steady"]
    report = reconciled(box)
    assert "steady" in report["applied"] and "after-broken" in report["applied"]  # a bad entry is not a removal:
    assert not [u for u in report["updates"] if u["experiment"] == "steady" and u["scaledown_window"] == 2]  # no drain

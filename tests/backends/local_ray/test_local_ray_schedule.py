"""A warm schedule end to end on the local Ray backend, over real HTTP: an experiment warm all day
gets its replica with no request at all — the ingress publishes the schedule and deploys the pool,
the pool's policy pins the replica — and its first request finds it warm. About 30 s."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from backends.local_ray.settings import load_ray_settings
from tests.backends.local_ray.conftest import ray_app

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)


@pytest.fixture(scope="module")
def scheduled_ray(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("schedule")
    registry = root / "experiments.toml"
    model = tiny_models["feature-extraction"]
    registry.write_text(
        f'[experiments.office]\nsource = "{model}"\ntask = "feature-extraction"\n'
        '[[experiments.office.warm]]\ndays = "daily"\nhours = "00:00-24:00"\ncontainers = 1\n\n'
        f'[experiments.plain]\nsource = "{model}"\ntask = "feature-extraction"\n')
    settings = load_ray_settings(env_file=None, registry_path=registry, event_log=root / "events.jsonl",
                                 replica_cpus=0.1, replica_memory_mb=0)
    with ray_app(settings) as url:
        yield url


def test_a_scheduled_experiment_is_warm_before_its_first_request(scheduled_ray: str) -> None:
    with httpx.Client(base_url=scheduled_ray, timeout=120) as http:
        deadline, rows = time.time() + 90, {}
        while time.time() < deadline:
            rows = {row["id"]: row for row in http.get("/experiments").json()}
            if rows["office"]["replicas"] == 1 and rows["office"]["state"] == "warm":
                break
            time.sleep(0.5)
        assert (rows["office"]["replicas"], rows["office"]["state"]) == (1, "warm"), rows
        assert rows["office"]["warm"] == ["daily 00:00-24:00 x1 UTC"] and rows["office"]["scheduled_containers"] == 1
        assert rows["plain"]["replicas"] == 0 and rows["plain"]["scheduled_containers"] == 0  # no schedule: no replica
        window = http.get("/health").json()["scaling"]["experiments"]["office"]
        assert window["scheduled_containers"] == 1 and window["min_containers"] == 1
        assert window["plan"].endswith("1 kept warm by the schedule"), window
        answer: dict[str, Any] = http.post("/predict/office", json={"inputs": "x"}).json()
    assert answer["cold_load"] is False, answer  # the scheduled replica took it

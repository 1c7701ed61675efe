"""The cost ledger on the Ray emulator, over real HTTP, against two references: the replica lifetimes
Ray itself reports (its actor table), and the simulator's fine mode replaying the same arrivals.

Time scale 30: the 600 s window is 20 s real. A scripted pattern — a cold request, two more inside the
window, then nothing until the pool scales to zero — gives one replica a life of about 30 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.local_ray.ingress import APP_NAME
from backends.local_ray.pool import pool_app_name
from backends.local_ray.settings import load_ray_settings
from core.keepwarm.policies import policy_from_settings
from core.sim.simulator import simulate_requests
from core.sim.traces import Request
from tests.backends.local_ray.conftest import ray_app

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)

TIME_SCALE = 30
OFFSETS_S = (0.0, 4.0, 8.0)  # after the first answer (its cold start), real seconds


def replica_lifetimes(experiment: str) -> list[float]:
    """Seconds from start to end of each of the experiment's replica actors that ended (Ray's actor table)."""
    from ray._private.state import actors

    prefix = f"SERVE_REPLICA::{pool_app_name(APP_NAME, experiment)}#"
    return [(a["EndTime"] - a["StartTime"]) / 1000 for a in actors().values()
            if (a.get("Name") or "").startswith(prefix) and a.get("State") == "DEAD" and a.get("EndTime")]


def test_the_ledger_agrees_with_rays_replica_lifetimes_and_the_simulator(tiny_models: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    registry = tmp_path / "experiments.toml"
    registry.write_text(f'[experiments.metered]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n')
    settings = load_ray_settings(env_file=None, registry_path=registry, time_scale=TIME_SCALE, base_warm_time=600,
                                 extension_time=0, replica_cpus=0.1, replica_memory_mb=0)
    sent: list[tuple[float, float]] = []  # (sent at, answered after), real seconds
    with ray_app(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        first = time.time()
        for offset in OFFSETS_S:
            time.sleep(max(0.0, (sent[0][0] + sent[0][1] + offset if sent else first) - time.time()))
            at = time.time()
            assert http.post("/predict/metered", json={"inputs": "hello"}).status_code == 200
            sent.append((at, time.time() - at))
        deadline = time.time() + 90
        while True:  # until the pool scaled to zero and the policy published the stop
            cost: dict[str, Any] = http.get("/experiments/metered").json()["cost"]
            if cost["measured"] and cost["since_start"]["total_seconds"] and cost["containers"] == 0:
                break
            assert time.time() < deadline, cost
            time.sleep(0.5)
        health = http.get("/health").json()["cost"]
    seconds = cost["since_start"]["container_seconds"]
    assert seconds["cold_start"] > 0.5 and seconds["busy"] > 0 and seconds["prewarmed"] == 0, (seconds, replica_lifetimes("metered"), sent)
    assert health["measured"] and health["all"]["since_start"]["total_seconds"] == pytest.approx(
        cost["since_start"]["total_seconds"], abs=0.01)

    # Ray's word: the replica actors' lifetimes
    lives = replica_lifetimes("metered")
    assert len(lives) == 1, lives
    total = cost["since_start"]["total_seconds"]
    assert abs(total - sum(lives)) / sum(lives) < 0.02, (total, lives, seconds)

    # the simulator's: the same arrivals (emulated seconds), each taking what it took here
    t0 = sent[0][0]
    requests = [Request((at - t0) * TIME_SCALE, "metered", took * TIME_SCALE) for at, took in sent]
    requests.append(Request(requests[-1].time_s + 10 * 600, "end-of-trace", 0.0))  # counts the last window whole
    result = simulate_requests(requests, policy_from_settings(settings), max_containers=1,
                               activity_window_s=settings.activity_window)
    simulated_idle_s = result.idle_container_minutes * 60 / TIME_SCALE
    idle = seconds["warm_idle"] + seconds["prewarmed"]
    assert abs(idle - simulated_idle_s) / simulated_idle_s < 0.05, (idle, simulated_idle_s, seconds)

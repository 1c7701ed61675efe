"""The warm workers' rules, without Ray: how many, what the raylet inherits, and that none is started
where none is wanted. (A real Ray instance keeping them and a replica taking one: test_local_ray.py.)"""

from __future__ import annotations

import pytest

from backends.local_ray.runner import _runtime_env, _warm_workers
from backends.local_ray.settings import load_ray_settings
from backends.local_ray.warm_workers import PRELOADED, WarmWorkers, raylet_environment


@pytest.mark.parametrize("overrides, expected", [
    ({}, None),  # unset: as many as cold starts at once (the machine's CPUs when that is 0), 4 at most
    ({"max_cold_starts": 3}, 3),
    ({"max_cold_starts": 16}, 4),  # a big machine keeps a few, not 16 × 300 MB
    ({"max_cold_starts": 3, "max_containers": 2}, 2),  # never more than could ever be taken
    ({"warm_workers": 0, "max_cold_starts": 3}, 0),
    ({"warm_workers": 5}, 5),  # asked for: as many
])
def test_how_many_warm_workers(overrides: dict[str, int], expected: int | None) -> None:
    import os

    settings = load_ray_settings(env_file=None, **overrides)
    assert _warm_workers(settings) == (expected if expected is not None else min(os.cpu_count() or 1, 4))


def test_the_raylet_imports_the_model_stack_and_keeps_enough_workers_alive() -> None:
    env = raylet_environment(4, max_replicas=10)
    assert env["RAY_preload_python_modules"] == PRELOADED and "torch" in PRELOADED.split(",")
    assert int(env["RAY_num_workers_soft_limit"]) >= 10 + 4  # replicas and warm workers are never killed as excess
    assert raylet_environment(0, max_replicas=10) == {}  # none wanted: Ray as it is


def test_a_ray_instance_of_our_own_gets_no_runtime_environment_a_cluster_does() -> None:
    """Ray hands a replica a warm worker only for the same runtime environment: on our own instance
    there is none (the environment is inherited); on a cluster the code must travel."""
    assert _runtime_env(own_cluster=True, staging=None) is None
    joined = _runtime_env(own_cluster=False, staging=None)
    assert joined is not None and {"env_vars", "py_modules"} <= set(joined)


def test_no_thread_when_no_warm_worker_is_wanted() -> None:
    keeper = WarmWorkers(0).start()
    assert not keeper._thread.is_alive()
    keeper.stop()

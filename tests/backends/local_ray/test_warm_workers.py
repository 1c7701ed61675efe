"""The warm workers' rules, without Ray: how many, what the raylet inherits, and that none is started
where none is wanted. (A real Ray instance keeping them and a replica taking one: test_local_ray.py.)"""

from __future__ import annotations

import pytest

from backends.local_ray.runner import _runtime_env, _warm_workers
from backends.local_ray.settings import load_ray_settings
from backends.local_ray.warm_workers import (
    PRELOADED, STARTUP_CONCURRENCY, WarmWorkers, raylet_environment, startup_concurrency, worker_counts, workers_to_ask)


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
    assert env["RAY_preload_python_modules"] == PRELOADED and "core.serving.model_stack" in PRELOADED.split(",")
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


def test_the_model_stack_holds_what_a_first_load_would_import() -> None:
    """What a warm worker preloads: after it, a first load imports no more of transformers' machinery."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import sys; import core.serving.model_stack; "
              "print(all(m in sys.modules for m in ('torch', 'transformers.modeling_utils', "
              "'transformers.models.auto.modeling_auto', 'transformers.models.auto.tokenization_auto', "
              "'transformers.tokenization_utils_tokenizers', 'transformers.generation.utils')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[3])
    assert out.stdout.strip() == "True", out.stderr


class FakeProcess:
    def __init__(self, *command: str, gone: bool = False):
        self.command, self.gone = list(command), gone

    def cmdline(self) -> list[str]:
        if self.gone:
            raise ProcessLookupError
        return self.command


def test_idle_and_starting_workers_are_told_apart() -> None:
    processes = [FakeProcess("ray::IDLE"), FakeProcess("ray::IDLE"), FakeProcess("ray::ServeReplica:app:pool"),
                 FakeProcess("/venv/bin/python", "/venv/lib/ray/_private/workers/default_worker.py", "--node-ip-address=x"),
                 FakeProcess("ray::IDLE", gone=True), FakeProcess("/usr/bin/raylet")]
    assert worker_counts(processes) == (2, 1)


@pytest.mark.parametrize("idle, starting, quiet, expected", [
    (0, 0, True, 2),  # ten wanted, none there: as many as the raylet starts at once, no more
    (0, 2, True, 0),  # two starting already: a third request would be dropped
    (7, 1, True, 1),
    (9, 0, True, 1),
    (10, 0, True, 0),
    (12, 0, True, 0),  # more than wanted (workers freed by replicas that stopped): none asked, none killed
    (3, 0, False, 0),  # cold starts are taking them: a new worker's imports would slow their loads
])
def test_workers_are_asked_for_within_the_raylets_startup_concurrency(idle: int, starting: int, quiet: bool,
                                                                     expected: int) -> None:
    assert workers_to_ask(10, idle, starting, quiet, concurrency=2) == expected


def test_the_raylets_startup_concurrency_is_read_from_its_command_line() -> None:
    assert startup_concurrency(["/ray/raylet", "--node_ip_address=x", "--maximum_startup_concurrency=3"]) == 3
    assert startup_concurrency(["/ray/raylet", "--maximum_startup_concurrency=0"]) == 1
    assert startup_concurrency(["/ray/raylet"]) == STARTUP_CONCURRENCY  # not said: this machine's CPUs

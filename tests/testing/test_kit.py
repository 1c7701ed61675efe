"""The testing kit (core.testing) as a user meets it: real Ray Serve and real HTTP, one Ray instance
for the module (the example test beside it starts it when run first), windows on the emulated clock
(time scale 300: a 600 s window passes in 2 s). What is checked: a failing expectation names the
window in force and the observed idle time; an exception inside `local_endpoint` leaves no process,
application or actor of its own, and the next endpoint reuses the same Ray; the in-process backend;
the end of the session stops Ray; the installed plugin is registered once; the kit's page shows the example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.testing import EmulatedClock, EndpointError, close_backends, local_endpoint
from core.testing.config import EndpointConfig, endpoint_settings, registry_file, settings_environment
from tests.conftest import REPO_ROOT, ray_processes

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)

EXAMPLE = REPO_ROOT / "tests" / "testing" / "examples" / "test_my_experiment.py"
TIME_SCALE = 300
WINDOWS = {"base_warm_time": 600, "extension_time": 600, "activity_window": 300, "replica_memory_mb": 0}


@pytest.fixture(scope="module")
def registry(tiny_models: dict[str, Path]) -> dict[str, Any]:
    return {"fe": {"source": str(tiny_models["feature-extraction"]), "task": "feature-extraction"}}


def command_lines() -> dict[int, str]:
    """Every process of this machine: pid → its full command line (read from /proc: never cut)."""
    lines = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone meanwhile
                pass
    return lines


def processes_named(fragment: str) -> list[str]:
    """Command lines holding `fragment` (a Ray actor's process title names its application)."""
    return [line for line in command_lines().values() if fragment in line]


def ray_instance_processes(node_id: str) -> set[int]:
    """PIDs of the GCS and raylet processes of the Ray instance whose head node is `node_id`."""
    return {pid for pid, line in command_lines().items()
            if node_id in line and ("gcs_server" in line or "/raylet" in line)}


def wait_until(condition: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_scale_to_zero_expected_too_early_fails_naming_the_window_and_the_idle_time(registry: dict[str, Any]) -> None:
    with local_endpoint(registry, settings=WINDOWS, time_scale=TIME_SCALE) as endpoint:
        body = endpoint.predict("fe")
        assert body["cold_load"] is True and body["scaledown_window_s"] == 600
        with pytest.raises(AssertionError) as early:
            endpoint.wait_for_scale_to_zero("fe", within_s=0.5)  # the window is 2 s real
        message = str(early.value)
        print(message)
        assert "'fe' did not scale to zero within 0.5 s" in message
        assert "the scaledown window in force is 600 s (2.00 s real at time scale 300) (isolated)" in message
        idle = re.search(r"observed idle time since its latest request: ([\d.]+) s \(([\d.]+) s real", message)
        assert idle is not None and 0 < float(idle.group(1)) < 600 and float(idle.group(2)) < 2.0
        assert "replicas now: 1" in message and "('cold_start'," in message
        with pytest.raises(AssertionError, match=r"runs 1 replica\(s\), not 2, after 0.5 s of waiting; the scaledown"):
            endpoint.wait_for_replicas("fe", 2, timeout_s=0.5)
        scaled = endpoint.wait_for_scale_to_zero("fe")
        assert scaled["window_s"] == 600 and scaled["idle_s"] >= 600
        assert endpoint.scaling_events("fe") == ["cold_start", "scale_to_zero"]
        assert [e["event"] for e in endpoint.events("fe")] == ["request", "cold_start", "scale_to_zero"]


def test_an_exception_inside_leaves_nothing_of_its_own_and_the_next_endpoint_reuses_ray(registry: dict[str, Any]) -> None:
    import ray
    from ray import serve

    from backends.local_ray.registry_keeper import NAMESPACE, keeper_name

    with pytest.raises(KeyboardInterrupt):  # a test interrupted with Ctrl-C (a failing assert takes the same path)
        with local_endpoint(registry, settings=WINDOWS, time_scale=TIME_SCALE, name="kit-interrupted") as first:
            first.predict("fe")
            assert len(processes_named("ServeReplica:kit-interrupted--fe")) == 1  # its experiment's replica
            assert processes_named("ServeReplica:kit-interrupted:ingress")
            instance = ray_instance_processes(first.details["node_id"])
            # no warm workers on the kit's instance: Serve's own processes never import torch
            controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
            pid = ray.get(controller.__ray_call__.remote(lambda _: os.getpid()))
            assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text()
            raise KeyboardInterrupt
    assert not [name for name in serve.status().applications if name.startswith("kit-interrupted")]
    assert wait_until(lambda: not processes_named("ServeReplica:kit-interrupted")), processes_named("kit-interrupted")
    with pytest.raises(ValueError):
        ray.get_actor(keeper_name("kit-interrupted"), namespace=NAMESPACE)
    with local_endpoint(registry, settings=WINDOWS, time_scale=TIME_SCALE) as second:
        assert second.details["started_ray"] is False  # no ray.init: the instance of the first endpoint
        assert second.details["node_id"] == first.details["node_id"]
        assert second.details["gcs_address"] == first.details["gcs_address"]
        assert instance and ray_instance_processes(first.details["node_id"]) == instance  # the same GCS and raylet processes
        assert second.experiment("fe")["replicas"] == 0  # nothing of the first endpoint's pool
        with pytest.raises(EndpointError, match="already open"):
            with local_endpoint(registry):
                pass


def test_the_inprocess_backend_serves_the_registry_and_has_no_windows_to_wait_for(registry: dict[str, Any]) -> None:
    with local_endpoint(registry, backend="inprocess", settings={"max_batch_size": 4}) as endpoint:
        assert endpoint.predict("fe")["cold_load"] is True
        assert endpoint.health()["configuration"]["HYBRID_MAX_BATCH_SIZE"] == 4
        assert [e["event"] for e in endpoint.events("fe")] == ["request", "cold_start"]  # its model loaded
        assert endpoint.scaling_events("fe") == ["cold_start"] and endpoint.predict("fe")["cold_load"] is False
        assert [e["event"] for e in endpoint.events("fe")] == ["request", "cold_start", "request"]
        with pytest.raises(AssertionError, match="does not emulate scaledown windows"):
            endpoint.wait_for_scale_to_zero("fe")


def test_the_end_of_the_session_stops_the_ray_instance_it_started() -> None:
    import ray

    assert ray.is_initialized()
    instance = ray_instance_processes(ray.get_runtime_context().get_node_id())
    assert instance  # held since the first endpoint of this module
    close_backends()  # what the plugin does when the session ends
    assert not ray.is_initialized()
    assert wait_until(lambda: not instance & ray_processes()), instance & ray_processes()


def test_inline_entries_and_settings_become_the_endpoints_settings(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    shutil.copytree(tiny_models["feature-extraction"], tmp_path / "model")
    config = EndpointConfig({"mine": {"source": "./model", "task": "feature-extraction"}},
                            {"MODAL_BASE_WARM_TIME": 900, "api_token": "t0ken"}, time_scale=450)
    path = registry_file(config.registry, tmp_path)
    assert path is not None and f'source = "{tmp_path / "model"}"' in path.read_text()  # resolved: the file moves
    settings = endpoint_settings(config, path, tmp_path / "events.jsonl")
    assert (settings.base_warm_time, settings.time_scale, settings.event_log) == (900, 450, tmp_path / "events.jsonl")
    env = settings_environment(settings)
    assert env["MODAL_BASE_WARM_TIME"] == "900" and env["HYBRID_TIME_SCALE"] == "450.0"
    assert env["HYBRID_API_TOKEN"] == "t0ken" and env["HYBRID_REGISTRY"] == str(path)
    assert EmulatedClock(450).to_real(900) == 2.0 and EmulatedClock(450).describe(900).endswith("at time scale 450)")
    with pytest.raises(ValueError, match=r"\[experiments.bad\]: task"):
        registry_file({"bad": {"source": "./model", "task": "summarise"}}, tmp_path)


PROBE = '''
def test_probe(pytestconfig, hybrid_serve_config):
    import core.testing.plugin as plugin
    names = [name for name, registered in pytestconfig.pluginmanager.list_name_plugin() if registered is plugin]
    assert names == ["core.testing.plugin"]
    assert hybrid_serve_config.time_scale == 7
'''


@pytest.mark.parametrize("extra", [[], ["-p", "core.testing.plugin"]], ids=["entry-point", "entry-point-and-p"])
def test_once_installed_the_plugin_is_registered_once(tmp_path: Path, extra: list[str]) -> None:
    """An installed hybrid-serve (its `pytest11` entry point, as pyproject.toml declares it) and this
    repository's `-p core.testing.plugin` are one plugin to pytest."""
    import tomllib

    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    dist = tmp_path / "site" / "hybrid_serve-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hybrid-serve\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    (tmp_path / "test_probe.py").write_text(PROBE.replace("def test_probe", "import pytest\n\n@pytest.mark.hybrid_serve(time_scale=7)\ndef test_probe"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tmp_path / "site")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "test_probe.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_the_kit_s_page_shows_the_example_test_as_it_is() -> None:
    page = (REPO_ROOT / "docs" / "testing-kit.md").read_text(encoding="utf-8")
    assert f"```python\n{EXAMPLE.read_text(encoding='utf-8')}```" in page


def test_a_session_with_the_kit_shows_no_warning_a_user_cannot_act_on(tmp_path: Path) -> None:
    """Serve's own Pydantic deprecations and the push period the emulator sets through a field Ray
    deprecates (and still reads) are not shown in a user's test run; other warnings still are."""
    (tmp_path / "test_probe.py").write_text(
        "import warnings\n\n"
        "def test_probe():\n"
        "    from ray.serve.config import AutoscalingConfig  # Serve's config module: its Pydantic fields\n"
        "    AutoscalingConfig(min_replicas=0, max_replicas=1, metrics_interval_s=0.2)\n"
        "    warnings.warn('a warning of the user', UserWarning)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "core.testing.plugin",
                           "test_probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed, 1 warning" in proc.stdout and "a warning of the user" in proc.stdout, proc.stdout[-3000:]
    assert "metrics_interval_s" not in proc.stdout and "PydanticDeprecatedSince20" not in proc.stdout

"""The local Ray backend against a hostile tester (issue 26), over real HTTP and real Ray Serve: a
request waiting in the cold start of an experiment that is retired answers 404 at once (one a replica
runs finishes); a request sent after a model swap's answer meets the new model; Serve's own
`/-/routes` and `/-/healthz` need the token; a replica whose model failed to load goes at once, not
after its window, and the next request loads the model again."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from core.events import read_events
from core.serving.registry import Registry
from core.serving.weights import sha256_of, weights_file
from backends.local_ray.settings import load_ray_settings
from tests.conftest import free_port, pool_applications, silent_hub, wait_until

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)

TOKEN = "ray-hostile-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "hybrid-serve"


@pytest.fixture(scope="module")
def ray_hostile(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from backends.local_ray import runner

    root = tmp_path_factory.mktemp("ray-hostile")
    fe, gen = tiny_models["feature-extraction"], tiny_models["text-generation"]
    later = root / "arrives-later"  # no model there yet: its load fails until the test puts one
    registry = root / "experiments.toml"
    registry.write_text("".join(f'[experiments.{name}]\nsource = "{source}"\ntask = "{task}"\n\n' for name, source, task in [
        ("stuck", "hybrid-serve-tests/never-answers", "feature-extraction"),  # its cold start never ends
        ("busy", gen, "text-generation"), ("swapped", fe, "feature-extraction"), ("broken", later, "feature-extraction"),
    ]))
    settings = load_ray_settings(env_file=None, registry_path=registry, registry_poll_s=0.2, api_token=TOKEN,
                             base_warm_time=2700, replica_cpus=0.1, replica_memory_mb=0, max_replicas=8,
                             cold_start_timeout_s=90, event_log=root / "events.jsonl")
    saved = dict(os.environ)
    with silent_hub() as hub:
        os.environ.update(hub)  # Ray's processes inherit it
        try:
            running = runner.start(settings, Registry.load(registry), "127.0.0.1", free_port())
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            yield {"url": f"http://{running.url}", "models": tiny_models, "later": later, "events": settings.event_log}
        finally:
            runner.stop(running)


def predict(url: str, experiment: str, inputs: str | list[str] = "hello world", **parameters: Any) -> httpx.Response:
    return httpx.post(f"{url}/predict/{experiment}", json={"inputs": inputs, "parameters": parameters},
                      headers=AUTH, timeout=120)


def test_a_request_waiting_in_the_cold_start_of_a_retired_experiment_answers_404_at_once(ray_hostile: dict[str, Any]) -> None:
    url = ray_hostile["url"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(predict, url, "stuck")
        wait_until(lambda: f"{APP}--stuck" in pool_applications(APP), timeout_s=60, what="stuck's pool (its cold start under way)")
        assert httpx.delete(f"{url}/experiments/stuck", headers=AUTH, timeout=30).status_code == 200
        answer = waiting.result(timeout=60)  # its cold start never ends: only the retirement answers it
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["type"] == "unknown_experiment" and "retired" in answer.json()["error"]["message"]
    assert predict(url, "stuck").status_code == 404


def test_a_request_a_replica_runs_when_its_experiment_is_retired_finishes(ray_hostile: dict[str, Any]) -> None:
    url = ray_hostile["url"]
    assert predict(url, "busy", "warm up").status_code == 200
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(predict, url, "busy", ["once upon a time"] * 8, max_new_tokens=100)
        wait_until(lambda: httpx.get(f"{url}/health", headers=AUTH, timeout=30).json()["activity"]["experiments"]["busy"]["in_flight"] == 1,
                   timeout_s=30, what="the long request to be under way")
        assert httpx.delete(f"{url}/experiments/busy", headers=AUTH, timeout=30).status_code == 200
        answer = running.result(timeout=120)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["outputs"]) == 8


def test_a_request_sent_after_a_swap_is_answered_meets_the_new_model(ray_hostile: dict[str, Any]) -> None:
    url, fe = ray_hostile["url"], ray_hostile["models"]["feature-extraction"]
    before = predict(url, "swapped").json()
    changed = httpx.put(f"{url}/experiments/swapped", headers=AUTH, timeout=30,  # a new definition: the weights pinned
                        json={"source": str(fe), "task": "feature-extraction", "sha256": sha256_of(weights_file(fe))})
    assert changed.status_code == 200 and changed.json()["change"] == "changed", changed.text
    after = predict(url, "swapped")
    assert after.status_code == 200, after.text
    assert after.json()["replica"] != before["replica"] and after.json()["cold_load"] is True  # the new pool's replica


def test_serves_own_endpoints_need_the_token(ray_hostile: dict[str, Any]) -> None:
    url = ray_hostile["url"]
    for path in ("/-/routes", "/-/healthz"):
        bare = httpx.get(url + path, timeout=30)
        assert bare.status_code == 401 and APP not in bare.text, (path, bare.text)
        assert httpx.get(url + path, headers=AUTH, timeout=30).status_code == 404  # off: GET /health is the probe
    assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}


def test_a_replica_whose_model_failed_to_load_goes_at_once_and_the_next_request_loads_again(ray_hostile: dict[str, Any]) -> None:
    url, events = ray_hostile["url"], ray_hostile["events"]
    failed = predict(url, "broken")
    assert failed.status_code == 503 and failed.json()["error"]["type"] == "model_unavailable", failed.text
    gone = lambda: [e for e in read_events(events) if e["experiment"] == "broken" and e["event"] == "scale_to_zero"]  # noqa: E731
    wait_until(gone, timeout_s=30, poll_s=0.2, what="the failed replica to go (its window is 2700 s)")
    assert "failed to load" in gone()[0]["reason"]
    shutil.copytree(ray_hostile["models"]["feature-extraction"], ray_hostile["later"])
    again = predict(url, "broken")
    assert again.status_code == 200 and again.json()["cold_load"] is True, again.text

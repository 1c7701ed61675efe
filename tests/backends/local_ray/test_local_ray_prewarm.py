"""Pre-warming end to end on the local Ray backend (adaptive policy), over real HTTP.

Time scale 6 (one emulated minute = 10 s real); 45 s real (4.5 emulated minutes) between requests.
The experiment's first 24 requests are history: written to the GCS as an earlier ingress would
have published them (with Ray up, before the application starts — the ingress takes them in at its
start). From them the adaptive policy has learned a pre-warm 4 minutes after each arrival (so many
gaps: scaling to zero turns the shorter pauses its prior still expects into cold starts) — the pool let go a minute after the request, one replica
brought back HYBRID_PREWARM_LEAD_S = 12 s (real, longer than a cold start on an idle machine; the first
request's measured cold start where longer) before the next request is due (28 s real after the arrival) — so the sixth request finds a warm replica
although the experiment had no replica in between (under the whole suite's load, one still finishing
its start: never one started for it). Takes about 65 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from backends.local_ray.activity_store import ActivityStore
from backends.local_ray.ingress import APP_NAME
from backends.local_ray.settings import load_ray_settings
from core.events import read_events
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.policies import policy_from_settings
from tests.backends.local_ray.conftest import ray_app

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)

GAP_S = 45.0
TIME_SCALE = 6


def publish_history(settings: Any, experiment: str, arrivals: list[float]) -> None:
    """What an ingress that served `arrivals` (real times; each request done 0.1 s later) published."""
    policy = policy_from_settings(settings)
    tracker = ActivityTracker(settings.activity_window, learner=policy.learner)
    for at in arrivals:
        tracker.record_request(experiment, at=at * TIME_SCALE)
        tracker.record_completion(experiment, at=(at + 0.1) * TIME_SCALE)
    record = tracker.export(experiment)
    assert record is not None
    ActivityStore(APP_NAME).write(record)


@pytest.fixture(scope="module")
def adaptive_ray(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("prewarm")
    registry = root / "experiments.toml"
    registry.write_text(f'[experiments.cron]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n')
    settings = load_ray_settings(env_file=None, registry_path=registry, time_scale=TIME_SCALE, policy_name="adaptive",
                                 base_warm_time=600, extension_time=0, activity_window=60, prewarm_lead_s=12,
                                 max_containers=1, event_log=root / "events.jsonl", replica_cpus=0.1, replica_memory_mb=0)
    import ray

    if not ray.is_initialized():  # the first Ray test of this worker: Ray up (the session's instance) for the GCS
        with ray_app(settings):
            pass
    next_due = time.time() + 15  # time enough for the application to start
    publish_history(settings, "cron", [next_due - GAP_S * k for k in range(24, 0, -1)])
    with ray_app(settings) as url:
        yield {"url": url, "events": root / "events.jsonl", "next_due": next_due}


def test_a_regular_experiment_is_prewarmed_between_requests(adaptive_ray: dict[str, Any]) -> None:
    url, events = adaptive_ray["url"], adaptive_ray["events"]
    answers = []
    with httpx.Client(base_url=url, timeout=120) as http:
        time.sleep(max(0.0, adaptive_ray["next_due"] - time.time()))
        answers.append(http.post("/predict/cron", json={"inputs": "beat 0"}).json())
        done = time.time()  # after its cold start (seconds); the pre-warm is timed from its arrival
        time.sleep(GAP_S)
        answers.append(http.post("/predict/cron", json={"inputs": "beat 1"}).json())
        health = http.get("/health").json()
    learned = answers[0]
    assert learned["window_reason"] == "learned", learned  # the history was taken in
    window = health["scaling"]["experiments"]["cron"]
    assert window["policy"] == "adaptive" and window["prewarm_after_s"] == 240 and "pre-warm after 4 min" in window["detail"]
    log = read_events(events)
    requests = [e["time"] for e in log if e["event"] == "request"]
    assert len(requests) == 2  # the history's requests were never sent
    after = [e for e in log if e["time"] > requests[0]]
    kinds = [e["event"] for e in after if e["event"] in ("scale_to_zero", "prewarm", "cold_start")]
    # its own cold start (no replica was left), gone a minute (emulated) after the request, back before the next one
    story = "\n".join(f'{e["time"] - requests[0]:7.2f} {e["event"].value:14} replicas={e.get("replicas")} '
                      f'phase={e.get("phase")} {e.get("reason") or ""} {e.get("replica_start_s", "")} {e.get("total_s", "")}' for e in log)
    assert kinds[:3] == ["cold_start", "scale_to_zero", "prewarm"], story
    prewarm = next(e for e in after if e["event"] == "prewarm")
    # due 40 s after the arrival; led by 12 s, or by the first request's measured cold start where longer (a busy machine)
    lead = max(12.0, next(e for e in log if e["event"] == "cold_start")["total_s"])
    assert 0 < prewarm["time"] - done < GAP_S - 5 and prewarm["time"] - requests[0] == pytest.approx(40 - lead, abs=3), story
    if answers[1]["cold_load"]:
        # It met the pre-warmed replica still loading: on this machine under the whole suite's load a cold start
        # can take longer than the lead (17 s seen). The request then waits for the rest of that start only —
        # the replica's start began before the request (a container started for it begins after it), so it
        # waits less than a whole cold start (the first request's).
        met = next(e for e in log if e["event"] == "cold_start" and e["time"] > requests[1])
        own = next(e for e in log if e["event"] == "cold_start")  # the first request's, a whole cold start
        assert met["total_s"] < min(own["total_s"], GAP_S), story

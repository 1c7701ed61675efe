"""Pre-warming end to end on the local Ray backend (adaptive policy), over real HTTP.

Time scale 6 (one emulated minute = 10 s real). Requests arrive every 25 s real (2.5 emulated
minutes): after four gaps the adaptive policy learns a pre-warm — scale to zero right after the
request, bring one replica back HYBRID_PREWARM_LEAD_S = 12 s (real, longer than a cold start here)
before the next request is due — so the next request finds a warm replica although the experiment
had no replica in between. Takes about two minutes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from core.events import read_events
from backends.local_ray.settings import load_ray_settings
from tests.backends.local_ray.conftest import ray_app

GAP_S = 25.0


@pytest.fixture(scope="module")
def adaptive_ray(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("prewarm")
    registry = root / "experiments.toml"
    registry.write_text(f'[experiments.cron]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n')
    settings = load_ray_settings(env_file=None, registry_path=registry, time_scale=6, policy_name="adaptive",
                             base_warm_time=600, extension_time=0, activity_window=60, prewarm_lead_s=12,
                             max_containers=1, event_log=root / "events.jsonl", replica_cpus=0.1, replica_memory_mb=0)
    with ray_app(settings) as url:
        yield {"url": url, "events": root / "events.jsonl"}


def test_a_regular_experiment_is_prewarmed_between_requests(adaptive_ray: dict[str, Any]) -> None:
    url, events = adaptive_ray["url"], adaptive_ray["events"]
    answers = []
    with httpx.Client(base_url=url, timeout=120) as http:
        sent = time.time()
        for i in range(6):
            answers.append(http.post("/predict/cron", json={"inputs": f"beat {i}"}).json())
            if i < 5:
                time.sleep(max(0.0, sent + GAP_S * (i + 1) - time.time()))
        health = http.get("/health").json()
    learned = answers[4]
    assert learned["window_reason"] == "learned"
    window = health["scaling"]["experiments"]["cron"]
    assert window["policy"] == "adaptive" and window["prewarm_after_s"] == 120 and "pre-warm after 2 min" in window["detail"]
    log = read_events(events)
    fifth = [e for e in log if e["event"] == "request"][4]["time"]
    after = [e for e in log if e["time"] > fifth]
    kinds = [e["event"] for e in after if e["event"] in ("scale_to_zero", "prewarm", "cold_start")]
    assert kinds[:2] == ["scale_to_zero", "prewarm"], kinds  # gone right after the request, back before the next
    prewarm = next(e for e in after if e["event"] == "prewarm")
    assert 0 < prewarm["time"] - fifth < GAP_S - 5
    sixth = [e for e in log if e["event"] == "request"][5]["time"]
    assert answers[5]["cold_load"] is False, [(e["event"], round(e["time"] - sixth, 2), e.get("replicas"), e.get("window_s"))
                                              for e in after]  # the sixth request found the pre-warmed replica

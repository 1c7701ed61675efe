"""Cold starts and scale-to-zero timing on the local Ray backend, with the demo model (issue 4).

Measured in one run, alternating trials:
- our cold request (request → answer, through Serve's proxy, the ingress and a replica started for
  it) vs a *bare* Serve deployment whose constructor only loads the same model with transformers
  (default autoscaling, scaled to zero between trials): target ours ≤ 1.2× bare;
- the cold start split into replica start and model load (as /experiments reports it);
- warm request latency;
- scale-to-zero error = time of the policy's scale_to_zero event − (end of the request as the client
  saw it + the window), over ≥ 20 trials: target median ≤ 1 s, max ≤ 2 s.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from ray import serve

from tests.conftest import free_port
from tests.event_log import wait_for_event
from core.serving.registry import Registry
from backends.local_ray.ingress import APP_NAME
from backends.local_ray.pool import deployment_name, pool_app_name
from backends.local_ray.settings import load_ray_settings

TRIALS = 20
BARE_TRIALS = 8
TIME_SCALE = 450  # base 900 s → 2 s
WINDOW_REAL_S = 900 / TIME_SCALE


class BareModel:
    """What any Serve deployment of this model pays: a replica, then a plain transformers load."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Registry.load().get("demo-embeddings").local_path()  # type: ignore[union-attr]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    async def __call__(self, request: Any) -> dict[str, Any]:
        import torch

        text = (await request.json())["inputs"]
        with torch.inference_mode():
            out = self.model(**self.tokenizer([text], return_tensors="pt")).last_hidden_state.mean(dim=1)
        return {"outputs": out.tolist()}


def _deploy_bare() -> None:
    import sys

    from ray import cloudpickle
    from ray.serve.config import AutoscalingConfig

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # benchmarks/ is not importable in Ray workers

    config = AutoscalingConfig(min_replicas=0, initial_replicas=0, max_replicas=1, look_back_period_s=1,
                               upscale_delay_s=0, downscale_delay_s=0.5, downscale_to_zero_delay_s=0.5)
    app = serve.deployment(BareModel, name="bare", autoscaling_config=config, ray_actor_options={"num_cpus": 0},
                           graceful_shutdown_wait_loop_s=0.2).bind()
    serve.run(app, name="bare", route_prefix="/bare")


def _replicas(app: str, deployment: str) -> int:
    """Replicas of a deployment in any state (0 when its application is not deployed: a pool is
    deployed on its experiment's first request)."""
    application = serve.status().applications.get(app)
    status = None if application is None else application.deployments.get(deployment)
    return 0 if status is None else sum(int(v) for v in status.replica_states.values())


def _wait_zero(app: str, deployment: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while _replicas(app, deployment):
        assert time.time() < deadline
        time.sleep(0.1)


def test_cold_start_and_scale_to_zero(benchmark, tmp_path: Path, summary) -> None:  # type: ignore[no-untyped-def]
    from backends.local_ray import runner

    events = tmp_path / "events.jsonl"
    settings = load_ray_settings(env_file=None, time_scale=TIME_SCALE, event_log=events, max_containers=1)
    port = free_port()
    running = runner.start(settings, Registry.load(), "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    ours_cold, bare_cold, warm, errors, replica_start, model_load = [], [], [], [], [], []
    try:
        _deploy_bare()
        with httpx.Client(timeout=300) as http:
            for trial in range(TRIALS):
                _wait_zero(pool_app_name(APP_NAME, "demo-embeddings"), deployment_name("demo-embeddings"))
                start = time.time()
                body = http.post(f"{url}/predict/demo-embeddings", json={"inputs": f"trial {trial}"}).json()
                ours_cold.append(time.time() - start)
                assert body["cold_load"] is True
                split = next(e for e in http.get(f"{url}/experiments").json() if e["id"] == "demo-embeddings")["model"]["last_cold_start"]
                replica_start.append(split["replica_start_s"])
                model_load.append(split["model_load_s"])
                if trial == 0:
                    for _ in range(20):
                        t = time.time()
                        http.post(f"{url}/predict/demo-embeddings", json={"inputs": "warm request"}).raise_for_status()
                        warm.append(time.time() - t)
                done = time.time()
                event = wait_for_event(events, "demo-embeddings", "scale_to_zero", done, timeout_s=60)
                # the window in force: base after an isolated request, base + extension after trial 0's warm burst
                errors.append(event["time"] - (done + event["window_s"] / TIME_SCALE))
                if trial < BARE_TRIALS:
                    _wait_zero("bare", "bare")
                    t = time.time()
                    http.post(f"http://127.0.0.1:{port}/bare", json={"inputs": f"trial {trial}"}).raise_for_status()
                    bare_cold.append(time.time() - t)
        benchmark.pedantic(lambda: httpx.post(f"{url}/predict/demo-embeddings", json={"inputs": "x"}, timeout=300), rounds=5, iterations=1)
    finally:
        runner.stop(running)
    med = statistics.median
    ratio = med(ours_cold) / med(bare_cold)
    abs_errors = [abs(e) for e in errors]
    benchmark.extra_info.update(ours_cold_s=ours_cold, bare_cold_s=bare_cold, window_errors_s=errors)
    summary.add("ray_cold_start", "cold request p50 (ours)", med(ours_cold), "s")
    summary.add("ray_cold_start", "cold request p50 (bare Serve deployment + transformers load)", med(bare_cold), "s")
    summary.add("ray_cold_start", "ours / bare", ratio, "×", "≤ 1.2×", f"{TRIALS} vs {BARE_TRIALS} trials")
    summary.add("ray_cold_start", "replica start p50", med(replica_start), "s")
    summary.add("ray_cold_start", "model load p50", med(model_load), "s")
    summary.add("ray_cold_start", "warm request p50", med(warm) * 1000, "ms")
    summary.add("ray_window", "scale-to-zero error median |e|", med(abs_errors), "s", "≤ 1 s", f"{TRIALS} trials, base window {WINDOW_REAL_S:g} s real")
    summary.add("ray_window", "scale-to-zero error max |e|", max(abs_errors), "s", "≤ 2 s")
    summary.add("ray_window", "scale-to-zero error mean (signed)", statistics.fmean(errors), "s")

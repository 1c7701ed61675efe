"""64 clients for 60 s on the demo model, the in-process backend and the local Ray backend in one run
(issues 12 and 13): throughput, latency, errors, memory, and how the Ray pool scaled; beside them, in
the same run, Serve's own floors — its path with no model, and a bare Serve deployment of the same
model (issue 24: Ray ≥ 0.8× that). Measured, never asserted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.load import LoadResult, closed_loop
from core.events import read_events
from core.testing import served

CLIENTS, SECONDS = 64, 60.0


def _report(summary, name: str, result: LoadResult, rss: tuple[int, int] | None = None) -> None:  # type: ignore[no-untyped-def]
    summary.add(name, f"throughput, {CLIENTS} clients × {SECONDS:g} s, demo model", result.throughput, "req/s")
    summary.add(name, "latency p50 / p95 / p99", result.percentile_ms(50), "ms", "",
                f"p95 {result.percentile_ms(95):.0f} ms, p99 {result.percentile_ms(99):.0f} ms")
    summary.add(name, "errors (non-200 or no answer)", float(result.errors), "", "0", str(dict(result.statuses)))
    if rss:
        summary.add(name, "server RSS before / after", rss[0] / 2**20, "MiB", "", f"after: {rss[1] / 2**20:.0f} MiB")


FLOOR_APP = """
import sys
from fastapi import FastAPI
import ray
from ray import serve

app = FastAPI()

@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128)
class Model:
    async def predict(self, inputs):
        return {"outputs": [[0.1] * 384 for _ in inputs]}

@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(app)
class Ingress:
    def __init__(self, model):
        self.model = model

    @app.post("/predict/{experiment}")
    async def predict(self, experiment: str, body: dict):
        return await self.model.predict.remote([body["inputs"]])

ray.init(address="local", include_dashboard=False, logging_level="ERROR")
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Ingress.bind(Model.bind()), name="floor", route_prefix="/",
          logging_config={"enable_access_log": False, "log_level": "WARNING"})
print("ready", flush=True)
sys.stdin.read()
"""


MODEL_FLOOR_APP = """
import asyncio
import sys

from fastapi import FastAPI
import ray
from ray import serve

app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128, num_replicas=int(sys.argv[2]))
@serve.ingress(app)
class Model:
    def __init__(self):
        from core.serving.models import load_model
        from core.serving.parameters import parse_parameters
        from core.serving.registry_file import RegistryFile

        _, registry = RegistryFile(None).read()  # the shipped registry, read-only
        experiment = registry.get("demo-embeddings")
        self.model, self.params = load_model(experiment), parse_parameters(experiment.task, {}, 64)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0)
    async def run(self, inputs):
        return await asyncio.to_thread(self.model.predict, inputs, self.params)

    @app.post("/predict/{experiment}")
    async def predict(self, experiment: str, body: dict):
        return {"outputs": [await self.run(body["inputs"])]}


ray.init(address="local", include_dashboard=False, logging_level="ERROR")
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Model.bind(), name="floor", route_prefix="/", logging_config={"enable_access_log": False, "log_level": "WARNING"})
print("ready", flush=True)
sys.stdin.read()
"""


def _bare_serve(app: str, seconds: float, replicas: int = 1) -> float:
    """Throughput of a bare Serve app (the script `app`, with `replicas` where it takes a count) under the
    load's clients, after a short warm-up."""
    import subprocess
    import sys

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", app, str(port), str(replicas)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        closed_loop(f"http://127.0.0.1:{port}", "x", clients=4, seconds=3)
        return closed_loop(f"http://127.0.0.1:{port}", "x", CLIENTS, seconds).throughput
    finally:
        proc.communicate("", timeout=60)


def _serve_floor(summary) -> float:  # type: ignore[no-untyped-def]
    """The same path with no model at all (proxy → FastAPI ingress → handle → replica): what Ray Serve
    itself costs per request on this machine, the ceiling of any Serve-based backend here."""
    floor = _bare_serve(FLOOR_APP, 30)
    summary.add("load_ray", "Serve's own floor: the same path without a model", floor, "req/s", "", "bare Serve app, 30 s")
    return floor


def test_64_clients_for_60_s_in_process_and_on_ray(benchmark, summary) -> None:  # type: ignore[no-untyped-def]
    with served(env={"HYBRID_MAX_BATCH_SIZE": "32"}) as server:
        closed_loop(server.url, "demo-embeddings", clients=4, seconds=3)  # the cold load is not part of it
        rss_before = server.rss_bytes()
        inprocess = benchmark.pedantic(lambda: closed_loop(server.url, "demo-embeddings", CLIENTS, SECONDS),
                                       rounds=1, iterations=1)
        rss_after = server.rss_bytes()
    _report(summary, "load_inprocess", inprocess, (rss_before, rss_after))

    events = Path(tempfile.mkdtemp()) / "events.jsonl"
    with served("ray", env={"HYBRID_MAX_BATCH_SIZE": "32", "HYBRID_EVENT_LOG": str(events), "HYBRID_EVENT_LOG_REQUESTS": "false"}) as server:
        closed_loop(server.url, "demo-embeddings", clients=4, seconds=10)  # the cold start is not part of it
        before = len(read_events(events))
        ray = closed_loop(server.url, "demo-embeddings", CLIENTS, SECONDS)
        during = read_events(events)[before:]
    _report(summary, "load_ray", ray)
    ups = sum(1 for e in during if e["event"] == "scale_up")
    downs = sum(1 for e in during if e["event"] in ("scale_down", "scale_to_zero"))
    summary.add("load_ray", "replica scale-ups / scale-downs during the load", float(ups), "", "no thrash", f"{downs} down")
    summary.add("load_ray", "throughput Ray / in-process", ray.throughput / inprocess.throughput, "×", "≥ 0.5×")
    floor = _serve_floor(summary)
    summary.add("load_ray", "Serve floor / in-process", floor / inprocess.throughput, "×")
    scaled = read_events(events)[: before + len(during)]  # the warm-up's too: what the pool ran at the load's end
    replicas = max(1, 1 + sum(e["event"] == "scale_up" for e in scaled) - sum(e["event"] == "scale_down" for e in scaled))
    bare = _bare_serve(MODEL_FLOOR_APP, SECONDS, replicas)
    summary.add("load_ray", f"bare Serve deployment of the demo model, {CLIENTS} clients", bare, "req/s", "",
                f"{replicas} replica(s), as ours ran; FastAPI ingress, @serve.batch ≤ 32, the model on a thread")
    summary.add("load_ray", "throughput Ray / bare Serve deployment of the same model", ray.throughput / bare, "×", "≥ 0.8×",
                "same run")
    benchmark.extra_info.update(inprocess=inprocess.throughput, ray=ray.throughput, ups=ups, downs=downs, floor=floor,
                                bare_serve_model=bare)

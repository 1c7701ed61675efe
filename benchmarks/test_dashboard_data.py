"""`GET /dashboard/data` with 1,000 registered experiments (issue: the dashboard; target < 50 ms p50).

The server is the in-process app (`create_app` over the real `InferenceEngine`, so the process carries
torch like a real one) in a process of its own, with 1,000 experiments registered in memory (no model
is loaded) and the state a busy hour leaves planted in it: every experiment had requests in the last
hour (tracker and traffic recorder), and the cost ledger holds what the engine can have run:

- `cache-bound`: each experiment had its model loaded a few minutes in the last hour, four (the model
  cache's default size) still running — what an in-process server's ledger holds;
- `every-replica-up`: every experiment ran a container the whole hour and still does (1,000 running),
  the ledger's worst case (on Ray and Modal the records come from their stores instead).

Each is measured with a raw keep-alive client, interleaved with the floor of the same server: `GET
/health` without the token, which the token middleware answers with a bare liveness status. Pages:
the first 50, a search that matches 100 (first 50 of them), the last page, and `/experiments?limit=50`
for comparison. Measured, never asserted.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from typing import Any

from benchmarks.rawhttp import RawHTTP, connect_when_listening
from tests.conftest import free_port

EXPERIMENTS = 1000
TOKEN = "bench-token"
#: Each scenario, and how many interleaved rounds it is measured over (the worst case answers slowly).
SCENARIOS = {"cache-bound": 200, "every-replica-up": 30}


def _plant(path: Any, engine: Any, scenario: str, now: float) -> None:
    """The state a busy hour leaves: requests for every experiment, and the ledger per `scenario`."""
    ledger = engine.cache.lives.ledger
    for i in range(EXPERIMENTS):
        experiment = f"exp-{i:04d}"
        for _ in range(3):
            path.controller.arrived(experiment)
            path.controller.finished(experiment)
        for minute in range(0, 60, 12):  # five minutes with requests in the hour
            path.traffic.request(experiment, now - 3600 + minute * 60 + i % 60, 200, 0.004, cold=minute == 0,
                                 queue_wait_s=0.0, inputs=1, window_s=900.0, reason="isolated")
        container = f"c-{experiment}"
        if scenario == "cache-bound":
            start = now - 3500 + (i * 3.4) % 3300
            ledger.started(experiment, container, at=start)
            ledger.ready(container, at=start + 2)
            ledger.request_started(container, at=start + 3)
            ledger.request_finished(container, at=start + 4)
            if i >= 4:
                ledger.stopped(container, at=start + 180)
        else:
            ledger.started(experiment, container, at=now - 3600)
            ledger.ready(container, at=now - 3590)
            for k in range(20):
                ledger.request_started(container, at=now - 3500 + k * 170)
                ledger.request_finished(container, at=now - 3499 + k * 170)


def _serve(port: int, scenario: str) -> None:
    import uvicorn

    from core.http.app import create_app
    from core.serving.engine import InferenceEngine
    from core.serving.registry import Experiment, Registry
    from core.serving.request_path import RequestPath
    from core.settings import load_settings

    settings = load_settings(env_file=None, api_token=TOKEN)
    tasks = ("feature-extraction", "feature-extraction", "text-classification", "text-generation")
    registry = Registry({f"exp-{i:04d}": Experiment(id=f"exp-{i:04d}", source=f"./models/m{i}", task=tasks[i % 4])
                         for i in range(EXPERIMENTS)})
    engine = InferenceEngine(settings)
    path = RequestPath(settings, registry, engine)
    _plant(path, engine, scenario, time.time())
    uvicorn.run(create_app(path), host="127.0.0.1", port=port, log_level="warning")


def _get(path: str, host: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()


def _measure(client: RawHTTP, requests: dict[str, bytes], rounds: int) -> dict[str, float]:
    """p50 of each request, ms, the requests interleaved round by round."""
    samples: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(rounds):
        for name, request in requests.items():
            started = time.perf_counter()
            status, _ = client.send(request)
            samples[name].append((time.perf_counter() - started) * 1000)
            assert status == 200, (name, status)
    return {name: statistics.median(values) for name, values in samples.items()}


def test_dashboard_data_at_1000_experiments(benchmark, summary) -> None:  # type: ignore[no-untyped-def]
    results: dict[str, dict[str, float]] = {}
    for scenario, rounds in SCENARIOS.items():
        port = free_port()
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, scenario), daemon=True)
        server.start()
        try:
            client = connect_when_listening(f"http://127.0.0.1:{port}", timeout_s=120)
            host = f"127.0.0.1:{port}"
            requests = {
                "floor": _get("/health", host, None),
                "first page": _get("/dashboard/data?limit=50", host, TOKEN),
                "search": _get("/dashboard/data?limit=50&q=exp-09", host, TOKEN),
                "last page": _get(f"/dashboard/data?limit=50&offset={EXPERIMENTS - 50}", host, TOKEN),
                "experiments": _get("/experiments?limit=50", host, TOKEN),
            }
            status, body = client.send(requests["search"])
            page = json.loads(body)
            assert status == 200 and page["total"] == EXPERIMENTS and page["matched"] == 100, page.get("matched")
            _measure(client, requests, 5)  # warm-up
            results[scenario] = _measure(client, requests, rounds)
            if scenario == "cache-bound":
                benchmark.pedantic(lambda: client.send(requests["first page"]), rounds=50, iterations=1)
            client.close()
        finally:
            server.terminate()
            server.join(10)
    for scenario, p50 in results.items():
        name = f"dashboard_data_{scenario}"
        summary.add(name, f"/dashboard/data first page (50 of {EXPERIMENTS}) p50", p50["first page"], "ms", "< 50 ms")
        summary.add(name, "/dashboard/data search (50 of 100 matching) p50", p50["search"], "ms", "< 50 ms")
        summary.add(name, "/dashboard/data last page p50", p50["last page"], "ms", "< 50 ms")
        summary.add(name, "/experiments?limit=50 p50 (for comparison)", p50["experiments"], "ms")
        summary.add(name, "GET /health without the token p50 (floor: the middleware answers)", p50["floor"], "ms", "",
                    "same server, same client, interleaved")
        benchmark.extra_info.update({f"{scenario} {k} p50 ms": v for k, v in p50.items()})

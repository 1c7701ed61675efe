"""What the HTTP/API layer costs over the model call, and what micro-batching buys (issue 3).

Targets: the API adds ≤ 1 ms p50 over the direct call; batching gives ≥ 3× the unbatched
throughput with 32 concurrent clients. The server is the real main job (`hybrid-serve serve`) in its
own process; every comparison is measured within one run, interleaved or alternated.

- API overhead = client-observed latency − the model call timed inside the server on the thread
  that ran it (reported as `timing.inference_ms` of the same request), with a minimal raw-socket
  client. For scale, the same client also measures a bare FastAPI endpoint (same request model,
  no model, no service) in the same run: the framework's own floor on this machine.
- Throughput: 32 concurrent aiohttp clients, 8 requests each, against the demo model with
  `HYBRID_MAX_BATCH_SIZE=32` vs `=1`, alternated three times; medians compared.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import aiohttp

from benchmarks.rawhttp import RawHTTP
from core.http.predict_routes import PredictRequest
from core.testing import served
from tests.conftest import free_port

ROUNDS = 400


def _bare_fastapi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/predict/{experiment_id}")
    async def predict(experiment_id: str, body: PredictRequest) -> dict:
        return {"outputs": [[0.1] * 32]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _connect_when_listening(url: str, timeout_s: float = 60) -> RawHTTP:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return RawHTTP(url)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_api_overhead_vs_model_call(benchmark, registry_file: Path, summary) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    bare = multiprocessing.get_context("spawn").Process(target=_bare_fastapi, args=(port,), daemon=True)
    bare.start()
    try:
        with served(env={"HYBRID_REGISTRY": str(registry_file)}) as server:
            ours, floor = RawHTTP(server.url), _connect_when_listening(f"http://127.0.0.1:{port}")
            request = ours.prepare_post("/predict/fe", {"inputs": "hello world"})
            floor_request = floor.prepare_post("/predict/fe", {"inputs": "hello world"})
            assert ours.send(request)[0] == 200 and floor.send(floor_request)[0] == 200
            latency, model, overhead, bare_ms = [], [], [], []
            for _ in range(ROUNDS):
                t = time.perf_counter()
                floor.send(floor_request)
                bare_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                status, body = ours.send(request)
                elapsed = (time.perf_counter() - t) * 1000
                inference = json.loads(body)["timing"]["inference_ms"]
                latency.append(elapsed)
                model.append(inference)
                overhead.append(elapsed - inference)
            benchmark.pedantic(lambda: ours.send(request), rounds=100, iterations=1)
            ours.close()
            floor.close()
    finally:
        bare.terminate()
    p50 = {k: statistics.median(v) for k, v in
           {"latency": latency, "model": model, "overhead": overhead, "bare": bare_ms}.items()}
    benchmark.extra_info.update({f"p50_{k}_ms": v for k, v in p50.items()})
    summary.add("api_overhead", "POST /predict p50, tiny model", p50["latency"], "ms")
    summary.add("api_overhead", "model call inside the server p50", p50["model"], "ms")
    summary.add("api_overhead", "API overhead p50 (latency − model call)", p50["overhead"], "ms", "≤ 1 ms")
    summary.add("api_overhead", "bare FastAPI+uvicorn round trip p50 (floor)", p50["bare"], "ms", "", "same client, same run")
    summary.add("api_overhead", "hybrid-serve's own share (overhead − floor)", p50["overhead"] - p50["bare"], "ms")


async def _burst(url: str, clients: int, per_client: int) -> float:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector) as http:
        async def client(n: int) -> None:
            for i in range(per_client):
                payload = {"inputs": f"client {n} request {i} about keep-warm windows"}
                async with http.post("/predict/demo-embeddings", json=payload) as response:
                    await response.read()
                    assert response.status == 200

        start = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        return clients * per_client / (time.perf_counter() - start)


def test_batched_vs_unbatched_throughput(benchmark, summary) -> None:  # type: ignore[no-untyped-def]
    clients, per_client = 32, 8
    rps: dict[str, list[float]] = {"batched": [], "unbatched": []}
    with served(env={"HYBRID_MAX_BATCH_SIZE": "32"}) as batched_server, served(env={"HYBRID_MAX_BATCH_SIZE": "1"}) as unbatched_server:
        batched, unbatched = batched_server.url, unbatched_server.url
        for url in (batched, unbatched):
            asyncio.run(_burst(url, 4, 2))  # the cold load is not part of throughput
        for _ in range(3):
            rps["batched"].append(asyncio.run(_burst(batched, clients, per_client)))
            rps["unbatched"].append(asyncio.run(_burst(unbatched, clients, per_client)))
        benchmark.pedantic(lambda: asyncio.run(_burst(batched, clients, per_client)), rounds=2, iterations=1)
    b, u = statistics.median(rps["batched"]), statistics.median(rps["unbatched"])
    benchmark.extra_info.update(batched_rps=b, unbatched_rps=u, ratio=b / u)
    summary.add("batching", "throughput, batch ≤ 32 (32 clients, demo model)", b, "req/s")
    summary.add("batching", "throughput, batch 1", u, "req/s")
    summary.add("batching", "batched / unbatched", b / u, "×", "≥ 3×")

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

from benchmarks.rawhttp import RawHTTP, connect_when_listening
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


def test_api_overhead_vs_model_call(benchmark, registry_file: Path, summary) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    bare = multiprocessing.get_context("spawn").Process(target=_bare_fastapi, args=(port,), daemon=True)
    bare.start()
    try:
        with served(env={"HYBRID_REGISTRY": str(registry_file)}) as server:
            ours, floor = RawHTTP(server.url), connect_when_listening(f"http://127.0.0.1:{port}")
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
    summary.add("api_overhead", "API overhead / bare FastAPI round trip", p50["overhead"] / p50["bare"], "×", "≤ 1.5×",
                "same client, same run, interleaved")


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


def _recording_cost_us(folder: Path, calls: int = 20000) -> float:
    """One request's record, microseconds (median of batches): the JSON line, its write, the minute counts."""
    from core.recording import Limits, Recording
    from core.serving.traffic import Traffic

    traffic = Traffic(Recording(folder, Limits(256 * 1024 * 1024, 30 * 86400)))
    batches = []
    for _ in range(20):
        t = time.perf_counter()
        for _ in range(calls // 20):
            traffic.request("fe", time.time(), 200, 0.0012, cold=False, queue_wait_s=0.0001, inputs=1,
                            window_s=900.0, reason="base")
        batches.append((time.perf_counter() - t) / (calls // 20) * 1e6)
    return statistics.median(batches)


def test_recording_traffic_costs_little_of_the_api_overhead(benchmark, registry_file: Path, summary,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    """Issue 21: recording costs at most 2 % of the API overhead. Two servers of the main job, recording
    on and off, answered in alternation by one client (the end-to-end difference, noisy at this size);
    and, in the same run, the record itself timed in a loop against the overhead measured with it on."""
    on_env = {"HYBRID_REGISTRY": str(registry_file), "HYBRID_TRAFFIC_DIR": str(tmp_path / "on")}
    off_env = {"HYBRID_REGISTRY": str(registry_file), "HYBRID_TRAFFIC_RECORD": "false"}
    with served(env=on_env) as on_server, served(env=off_env) as off_server:
        on, off = RawHTTP(on_server.url), RawHTTP(off_server.url)
        on_request = on.prepare_post("/predict/fe", {"inputs": "hello world"})
        off_request = off.prepare_post("/predict/fe", {"inputs": "hello world"})
        assert on.send(on_request)[0] == 200 and off.send(off_request)[0] == 200
        overhead: dict[str, list[float]] = {"on": [], "off": []}
        pair = [("on", on, on_request), ("off", off, off_request)]
        for n in range(ROUNDS * 2):
            for name, client, request in pair if n % 2 else pair[::-1]:  # neither always goes first
                t = time.perf_counter()
                _, body = client.send(request)
                overhead[name].append((time.perf_counter() - t) * 1000 - json.loads(body)["timing"]["inference_ms"])
        benchmark.pedantic(lambda: on.send(on_request), rounds=50, iterations=1)
        on.close()
        off.close()
    assert list((tmp_path / "on").glob("*.jsonl")) and not (tmp_path / "off").exists()
    p50 = {k: statistics.median(v) for k, v in overhead.items()}
    record_us = _recording_cost_us(tmp_path / "loop")
    share = record_us / 1000 / p50["on"]
    benchmark.extra_info.update({"p50_overhead_on_ms": p50["on"], "p50_overhead_off_ms": p50["off"],
                                 "record_us": record_us, "record_share_of_overhead": share})
    summary.add("traffic_recording", "API overhead p50, recording on", p50["on"], "ms", "", "two servers, alternated")
    summary.add("traffic_recording", "API overhead p50, recording off", p50["off"], "ms", "", "same client, same run")
    summary.add("traffic_recording", "end-to-end difference (on / off)", p50["on"] / p50["off"], "×", "",
                "within this machine's noise")
    summary.add("traffic_recording", "one request's record (timed in a loop)", record_us, "µs")
    summary.add("traffic_recording", "record / API overhead", share * 100, "%", "≤ 2 %")

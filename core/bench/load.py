"""Closed-loop load: N clients, each sending its next request as soon as the last was answered, for a
fixed time — the warm latency and throughput of `hybrid-serve bench`.

Why this module exists: latency percentiles and throughput under concurrency are measured one way,
whatever the target (the local emulator, a deployed endpoint with its credentials); the answers'
`batch_inputs` and `cold_load` say how the server batched them and whether one waited for a new replica.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import httpx

from core.bench.stats import LoadResult

#: A progress report: seconds elapsed, of the phase's seconds, and the answers so far.
Tick = Callable[[float, float, int], None]


async def closed_loop(url: str, experiment: str, payload: dict[str, Any], clients: int, seconds: float,
                      headers: dict[str, str] | None = None, tick: Tick | None = None,
                      tick_every_s: float = 5.0, timeout_s: float = 120.0) -> LoadResult:
    """`clients` clients posting `payload` to `/predict/{experiment}` for `seconds`; an answer that
    waited for a cold start is counted apart (`cold_answers`), not in the warm latencies."""
    result = LoadResult(seconds)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout_s) as http:
        started = time.monotonic()
        deadline = started + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                try:
                    response = await http.post(f"/predict/{experiment}", json=payload)
                except httpx.HTTPError:
                    result.statuses[-1] += 1
                    continue
                latency = time.perf_counter() - sent
                result.statuses[response.status_code] += 1
                if response.status_code == 200:
                    record(result, response.json(), latency)

        async def report() -> None:
            while True:
                await asyncio.sleep(tick_every_s)
                if tick is not None:
                    tick(time.monotonic() - started, seconds, result.statuses[200])

        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(*(client() for _ in range(clients)))
        finally:
            reporter.cancel()
        result.seconds = time.monotonic() - started
    return result


def record(result: LoadResult, answer: dict[str, Any], latency_s: float) -> None:
    """One answered request into `result`: its latency (a warm one) or a cold answer, and its batch."""
    if answer.get("cold_load"):
        result.cold_answers += 1
    else:
        result.latencies.append(latency_s)
    if isinstance(answer.get("batch_inputs"), int):
        result.batch_inputs.append(answer["batch_inputs"])

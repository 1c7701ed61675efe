"""Closed-loop load: N clients, each sending its next request as soon as the last was answered, for a
fixed time — what a busy integration test or a traffic spike does to a server.

Why this module exists: throughput and latency under load are measured the same way against every
backend (in-process, Ray), so their numbers compare within one run. The summary (`LoadResult`:
throughput, percentiles) is `hybrid-serve bench`'s own (core.bench.stats); this client stays on aiohttp,
the client the published load figures were measured with.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from core.bench.stats import LoadResult


async def _load(url: str, experiment: str, clients: int, seconds: float) -> LoadResult:
    result = LoadResult(seconds)
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:
        deadline = time.monotonic() + seconds

        async def client(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                payload = {"inputs": f"client {n} request {i}: keep GPUs warm only while traffic pays for it"}
                started = time.perf_counter()
                try:
                    async with http.post(f"/predict/{experiment}", json=payload) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status = -1
                result.statuses[status] += 1
                if status == 200:
                    result.latencies.append(time.perf_counter() - started)
                i += 1

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(clients)))
        result.seconds = time.monotonic() - started
    return result


def closed_loop(url: str, experiment: str, clients: int = 64, seconds: float = 60.0) -> LoadResult:
    return asyncio.run(_load(url, experiment, clients, seconds))

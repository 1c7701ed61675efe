"""64 clients for 60 s against the in-process backend on the demo model: throughput, latency,
errors, and memory before and after (issue 12). Measured, never asserted."""

from __future__ import annotations

from benchmarks.load import closed_loop
from benchmarks.server_process import served

CLIENTS, SECONDS = 64, 60.0


def test_64_clients_for_60_s_in_process(benchmark, summary) -> None:  # type: ignore[no-untyped-def]
    with served(env={"HYBRID_MAX_BATCH_SIZE": "32"}) as server:
        closed_loop(server.url, "demo-embeddings", clients=4, seconds=3)  # the cold load is not part of it
        rss_before = server.rss_bytes()
        result = benchmark.pedantic(lambda: closed_loop(server.url, "demo-embeddings", CLIENTS, SECONDS),
                                    rounds=1, iterations=1)
        rss_after = server.rss_bytes()
    benchmark.extra_info.update(throughput=result.throughput, errors=result.errors, statuses=dict(result.statuses))
    name = "load_inprocess"
    summary.add(name, f"throughput, {CLIENTS} clients × {SECONDS:g} s, demo model", result.throughput, "req/s")
    summary.add(name, "latency p50 / p95 / p99", result.percentile_ms(50), "ms", "",
                f"p95 {result.percentile_ms(95):.0f} ms, p99 {result.percentile_ms(99):.0f} ms")
    summary.add(name, "errors (non-200 or no answer)", float(result.errors), "", "0", str(dict(result.statuses)))
    summary.add(name, "server RSS before / after", rss_before / 2**20, "MiB", "", f"after: {rss_after / 2**20:.0f} MiB")

"""Experiments that come and go on the local Ray backend (issue 14): server start time and memory at
rest with 1, 100 and 1,000 registered experiments (pools are lazy: none is deployed before its first
request), `/experiments` latency at that size, and the time from `hybrid-serve experiments add` to the
first answered request of the new experiment (a live registry change plus one cold start).
Measured, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.probes import median_get_ms, rss_mb
from core.testing import served
from tests.conftest import ray_processes


def _add_to_first_answer(url: str, registry: Path, source: Path) -> tuple[float, float]:
    """`experiments add` as a user runs it, then requests until the new experiment answers: the
    command's own time and the time from its start to the first 200."""
    env = {**os.environ, "HYBRID_REGISTRY": str(registry)}
    exe = Path(sys.executable).parent / "hybrid-serve"
    started = time.monotonic()
    subprocess.run([str(exe), "experiments", "add", "fresh", "--source", str(source), "--task", "feature-extraction"],
                   env=env, check=True, capture_output=True, timeout=120)
    command_s = time.monotonic() - started
    while True:
        status = httpx.post(f"{url}/predict/fresh", json={"inputs": "x"}, timeout=300).status_code
        if status == 200:
            return command_s, time.monotonic() - started
        assert status == 404 and time.monotonic() - started < 300, status
        time.sleep(0.05)


def test_1_100_1000_registered(benchmark, tiny_models, summary) -> None:  # type: ignore[no-untyped-def]
    fe = tiny_models["feature-extraction"]
    for count in (1, 100, 1000):
        root = Path(tempfile.mkdtemp())
        registry = root / "experiments.toml"
        registry.write_text("".join(f'[experiments.e{i}]\nsource = "{fe}"\ntask = "feature-extraction"\n\n'
                                    for i in range(count)))
        env = {"HYBRID_REGISTRY": str(registry)}
        started = time.monotonic()
        with served("ray", env=env, timeout_s=600) as server:
            start_s = time.monotonic() - started
            time.sleep(10)  # at rest
            rest_mb = rss_mb(ray_processes() | {server.pid})
            experiments_ms = median_get_ms(f"{server.url}/experiments", 5)
            page_ms = median_get_ms(f"{server.url}/experiments?offset=0&limit=50", 5)
            command_s, first_s = _add_to_first_answer(server.url, registry, fe)
        name = f"ray_registry_{count}"
        summary.add(name, f"start time, {count} registered", start_s, "s", "flat in the count")
        summary.add(name, "memory at rest (server + Ray processes, RSS)", rest_mb, "MiB", "flat in the count")
        summary.add(name, f"/experiments p50 (all {count})", experiments_ms, "ms", "< 1000 ms")
        summary.add(name, "/experiments?limit=50 p50", page_ms, "ms")
        summary.add(name, "`experiments add` command", command_s, "s")
        summary.add(name, "`experiments add` → first answer (incl. one cold start)", first_s, "s")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)

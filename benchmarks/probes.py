"""What the Ray benchmarks read off this machine: CPU and memory of a set of processes, and an
endpoint's median latency.

Why this module exists: the scale and registry benchmarks measure the same things the same way, so
their figures compare; one reading of /proc and one latency probe serve both."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import httpx

from tests.conftest import ray_processes


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time the processes used so far (those that are gone count nothing)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def idle_cores(seconds: float = 20.0) -> float:
    """Cores Ray's processes use on average over `seconds` from now."""
    pids = ray_processes()
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def rss_mb(pids: set[int]) -> float:
    """Resident memory of the processes together, MiB."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total / 2**20


def median_get_ms(url: str, n: int = 10) -> float:
    """Median latency of `n` GETs of `url` (each must answer 200), ms."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        assert httpx.get(url, timeout=120).status_code == 200
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)

"""The simulator on the full Azure Functions 2019 sample (issue 6): speed and memory.

Target: 6.2 M invocations through one policy in minute mode in under 10 s on this 2-core machine,
memory independent of the number of invocations. Memory is checked by running the same trace with
every count multiplied by 1000 (6.2 G invocations, same minutes): the peak must not grow with it.
"""

from __future__ import annotations

import csv
import time
import tracemalloc
from pathlib import Path

from core.keepwarm.decision import NamedPolicy
from core.keepwarm.hybrid import fixed_window
from core.sim.simulator import simulate_minute_trace
from core.sim.traces import TraceFormat, read_minute_series
from tests.conftest import REPO_ROOT

TRACE = REPO_ROOT.parent / "shared" / "traces" / "azure-functions-2019" / "invocations_per_function.csv"


def _run(path: Path) -> tuple[float, int, int]:
    tracemalloc.start()
    start = time.perf_counter()
    results, _ = simulate_minute_trace(read_minute_series(path, TraceFormat.AZURE_FUNCTIONS_2019), [NamedPolicy("fixed:600", fixed_window(600))], 1440)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, results["fixed:600"].invocations


def test_full_2019_sample_in_minute_mode(benchmark, tmp_path: Path, summary) -> None:  # type: ignore[no-untyped-def]
    scaled = tmp_path / "scaled.csv"
    with TRACE.open(newline="") as src, scaled.open("w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for row in reader:
            writer.writerow(row[:3] + [str(int(c) * 1000) for c in row[3:]])
    _, peak, invocations = _run(TRACE)
    _, peak_scaled, invocations_scaled = _run(scaled)
    assert invocations_scaled == invocations * 1000
    benchmark.pedantic(lambda: simulate_minute_trace(
        read_minute_series(TRACE, TraceFormat.AZURE_FUNCTIONS_2019), [NamedPolicy("fixed:600", fixed_window(600))], 1440), rounds=3, iterations=1)
    seconds = benchmark.stats.stats.median
    summary.add("simulator", "full 2019 sample, one policy, minute mode", seconds, "s", "< 10 s", f"{invocations:,} invocations")
    summary.add("simulator", "peak traced memory", peak / 2**20, "MiB")
    summary.add("simulator", "peak memory with 1000× the invocations / peak", peak_scaled / peak, "×", "≈ 1")

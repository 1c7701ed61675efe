"""The simulator on the full Azure Functions 2019 sample (issues 6 and 15): speed and memory.

Targets: 6.2 M invocations through one policy in minute mode in under 10 s on this 2-core machine,
memory independent of the number of invocations; the adaptive policy (the one that learns, with its
plan recomputations) through the same sample in under 1 s, with ≤ 2 KB of learned state per
experiment; the adaptive policy in fine mode (every request, its duration, the containers it needs)
in ≤ 20 s (issue 25). Memory is checked by running the same trace with every count multiplied by 1000
(6.2 G invocations, same minutes): the peak must not grow with it.
"""

from __future__ import annotations

import csv
import enum
import random
import sys
import time
import tracemalloc
from pathlib import Path

from core.keepwarm.decision import NamedPolicy
from core.keepwarm.histogram import LearnedGaps
from core.keepwarm.hybrid import fixed_window
from core.settings import load_settings
from core.sim.simulator import SimResult, simulate_minute_trace, simulate_requests
from core.sim.specs import parse_policy
from core.sim.traces import TraceFormat, read_function_durations, read_minute_series, read_replay, read_requests
from tests.conftest import SHARED_2019 as TRACE


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


def test_adaptive_policy_on_the_full_2019_sample(benchmark, summary) -> None:  # type: ignore[no-untyped-def]
    policy = parse_policy("adaptive", load_settings(env_file=None))  # κ from the settings: the default
    benchmark.pedantic(lambda: simulate_minute_trace(
        read_minute_series(TRACE, TraceFormat.AZURE_FUNCTIONS_2019), [policy], 1440), rounds=5, iterations=1)
    summary.add("simulator", "full 2019 sample, adaptive policy (default κ), minute mode", benchmark.stats.stats.median,
                "s", "< 1 s", "trace read included; best of 5: " + f"{benchmark.stats.stats.min:.3f} s")
    summary.add("simulator", "learned state of one experiment after 100,000 requests", float(_learned_state_bytes(policy)),
                "B", "≤ 2 KB", "histogram, counters, cached plan and decision")


def test_adaptive_policy_on_the_full_2019_sample_in_fine_mode(benchmark, summary) -> None:  # type: ignore[no-untyped-def]
    """Fine mode (issue 25): every request at its time, with the trace's function durations and up to
    the settings' containers per experiment, each taking MODAL_CONCURRENT_INPUTS requests at once — as
    `hybrid-serve simulate --mode fine` replays it."""
    settings = load_settings(env_file=None)
    policy = parse_policy("adaptive", settings)
    durations = read_function_durations(TRACE.with_name("function_durations.csv"))

    def replay(reader=read_replay) -> SimResult:  # type: ignore[no-untyped-def]
        return simulate_requests(reader(TRACE, TraceFormat.AZURE_FUNCTIONS_2019), policy,
                                 settings.experiment_max_containers, durations=durations,
                                 activity_window_s=settings.activity_window,
                                 concurrent_inputs=settings.modal_concurrent_inputs)

    result = benchmark.pedantic(replay, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    summary.add("simulator", "full 2019 sample, adaptive policy, fine mode", seconds, "s", "≤ 20 s",
                f"{result.invocations:,} requests, {result.cold_starts:,} cold starts; trace read included")
    start = time.perf_counter()  # the same replay request by request: what the minute runs save, and that they change nothing
    one_by_one = replay(read_requests)
    same = all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(result.summary().values(), one_by_one.summary().values())
               if not isinstance(a, str))
    summary.add("simulator", "fine mode request by request / in minute runs", (time.perf_counter() - start) / seconds, "×",
                "", f"same result: {'yes' if same else 'NO'} ({one_by_one.cold_starts:,} cold starts, "
                f"{one_by_one.idle_container_minutes:,.1f} idle container-minutes)")


def _learned_state_bytes(policy: NamedPolicy) -> int:
    """Everything an experiment's `LearnedGaps` holds (the learner, shared by all experiments, left out)."""
    assert policy.learner is not None
    gaps, rng = LearnedGaps(policy.learner), random.Random(1)
    for _ in range(100_000):
        gaps.add(rng.choice([1.0, 120.0, 600.0, 3000.0, 20_000.0]))
        gaps.learned()
    seen: set[int] = set()

    def size(obj: object) -> int:
        shared = obj is None or obj is policy.learner or isinstance(obj, (type, enum.Enum, bool))
        if id(obj) in seen or shared or (type(obj) is int and -5 <= obj <= 256):  # singletons, cached small ints
            return 0
        seen.add(id(obj))
        total = sys.getsizeof(obj)
        for name in (slot for cls in type(obj).__mro__ for slot in getattr(cls, "__slots__", ())):
            total += size(getattr(obj, name, None))
        attributes = getattr(obj, "__dict__", None)
        if attributes is not None:
            total += sys.getsizeof(attributes) + sum(size(value) for value in attributes.values())
        return total

    return size(gaps)

"""The local Ray backend with 1, 10 and 100 registered experiments (issue 13), default resources: start
time, idle CPU of Ray's processes after every experiment got a request (and scaled to zero) — handles
open, handles closed, idle pools deleted —
/experiments and /metrics latency with 10 experiments warm, and the scale-to-zero error of those
requests; and ten cold starts at once, taking turns (HYBRID_MAX_COLD_STARTS default) or all at once.
Measured, never asserted."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.probes import idle_cores, median_get_ms
from core.events import read_events
from backends.local_ray.warm_workers import DEFAULT_MAX, idle_workers
from core.testing import served

TIME_SCALE = 450  # base window 900 s → 2 s real
WINDOW_S = 900 / TIME_SCALE
HANDLE_IDLE_S = 30.0  # the ingress closes a pool's handle once the pool has been at zero this long
POOL_TTL_S = 60.0  # ... and deletes the pool once it has been at zero this long (HYBRID_IDLE_POOL_TTL_S default)
#: BENCH_SCALE_KEEP_POOLS=1: the same with HYBRID_IDLE_POOL_TTL_S=0 (pools never deleted), for comparison.
KEEP_POOLS = os.environ.get("BENCH_SCALE_KEEP_POOLS") == "1"
DELETING_S = 40.0  # the ingress deletes pools a few at a time: a hundred take this long here
MEASURE_S = 20.0  # each idle CPU reading averages this long
#: When, after the last request, each idle CPU reading starts (real seconds).
IDLE_AFTER_S = WINDOW_S + 5  # every pool at zero, handles still open
HANDLES_CLOSED_AFTER_S = HANDLE_IDLE_S + 5
AT_REST_AFTER_S = POOL_TTL_S + DELETING_S


@pytest.mark.timeout(2400)  # 111 cold starts, two at a time on this machine
def test_1_10_100_experiments(benchmark, tiny_models, summary) -> None:  # type: ignore[no-untyped-def]
    fe = tiny_models["feature-extraction"]
    counts = [int(c) for c in os.environ.get("BENCH_SCALE_COUNTS", "1,10,100").split(",")]
    for count in counts:
        root = Path(tempfile.mkdtemp())
        registry = root / "experiments.toml"
        registry.write_text("".join(f'[experiments.e{i}]\nsource = "{fe}"\ntask = "feature-extraction"\n\n' for i in range(count)))
        events = root / "events.jsonl"
        env = {"HYBRID_REGISTRY": str(registry), "HYBRID_TIME_SCALE": str(TIME_SCALE), "HYBRID_EVENT_LOG": str(events)}
        if KEEP_POOLS:
            env["HYBRID_IDLE_POOL_TTL_S"] = "0"
        started = time.monotonic()
        with served("ray", env=env, timeout_s=600) as server:
            start_s = time.monotonic() - started
            url = server.url
            with ThreadPoolExecutor(10) as pool:  # every experiment gets a request, ten at a time
                answers = list(pool.map(lambda i: (f"e{i}", httpx.post(f"{url}/predict/e{i}", json={"inputs": "x"},
                                                                       timeout=300).status_code, time.time()), range(count)))
            ends = {e: at for e, status, at in answers if status == 200}
            touched = time.monotonic()

            def cores_from(after_s: float) -> float:
                """Idle cores over MEASURE_S, from `after_s` after the last request."""
                time.sleep(max(0.0, touched + after_s - time.monotonic()))
                return idle_cores(MEASURE_S)

            idle = cores_from(IDLE_AFTER_S)  # all at zero; the ingress still holds a handle to each pool
            handles_closed = cores_from(HANDLES_CLOSED_AFTER_S)  # every pool still deployed, polled by the controller
            rest = cores_from(AT_REST_AFTER_S)  # at zero for 60 s: deleted (unless KEEP_POOLS)
            warm = [f"e{i}" for i in range(min(10, count))]
            back = time.monotonic()
            with ThreadPoolExecutor(10) as pool:  # their pools were deleted: deployed again, cold starts
                list(pool.map(lambda e: httpx.post(f"{url}/predict/{e}", json={"inputs": "y"}, timeout=300), warm))
            back_s = time.monotonic() - back
            experiments_ms, metrics_ms = median_get_ms(f"{url}/experiments", 5), median_get_ms(f"{url}/metrics", 5)
        downs = {}
        for event in read_events(events):
            if event["event"] == "scale_to_zero" and event["experiment"] in ends and event["experiment"] not in downs:
                downs[event["experiment"]] = event["time"] - (ends[event["experiment"]] + WINDOW_S)
        errors = sorted(abs(e) for e in downs.values())
        name = f"ray_scale_{count}" + ("_pools_kept" if KEEP_POOLS else "")
        summary.add(name, f"start time, {count} experiments registered", start_s, "s")
        summary.add(name, "requests answered 200 while touching all, ten clients", len(ends) / count, "share", "1.0",
                    f"{count - len(ends)} refused (503) of {count}")
        summary.add(name, "idle CPU of Ray's processes after every experiment was touched", idle, "cores", "≈ flat",
                    f"{IDLE_AFTER_S:.0f}–{IDLE_AFTER_S + MEASURE_S:.0f} s after the last request, handles still open")
        summary.add(name, "idle CPU of Ray's processes, handles closed, pools still deployed", handles_closed, "cores", "",
                    f"{HANDLES_CLOSED_AFTER_S:.0f}–{HANDLES_CLOSED_AFTER_S + MEASURE_S:.0f} s after the last request")
        summary.add(name, f"idle CPU of Ray's processes at rest ({'pools kept' if KEEP_POOLS else 'idle pools deleted'})", rest, "cores", "≈ flat",
                    f"{AT_REST_AFTER_S:.0f}–{AT_REST_AFTER_S + MEASURE_S:.0f} s after the last request")
        summary.add(name, f"{len(warm)} experiments at zero brought back by a request each (ten clients)", back_s, "s", "",
                    ("" if KEEP_POOLS else "pools deployed again + ") + "cold starts, two at a time")
        summary.add(name, "/experiments p50 (10 warm)", experiments_ms, "ms", "< 1000 ms")
        summary.add(name, "/metrics p50 (10 warm)", metrics_ms, "ms", "< 1000 ms")
        if errors:
            summary.add(name, "scale-to-zero error, median / max |e|", statistics.median(errors), "s", "≤ 1 s",
                        f"max {errors[-1]:.2f} s over {len(errors)} experiments")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def _idle_workers() -> int:
    """Ray's idle worker processes on this machine."""
    import psutil

    return idle_workers(psutil.process_iter())


def _ten_cold_starts(fe: str, max_cold_starts: int, warm_workers: int | None) -> dict[str, float]:
    """One server: its first cold start, three lone cold starts (their median is the lone figure: one
    alone varied by ±10 % here), then ten experiments' first requests sent at once (a cold pool each) —
    each once its warm workers are ready. Client latencies, seconds."""
    root = Path(tempfile.mkdtemp())
    registry = root / "experiments.toml"
    registry.write_text("".join(f'[experiments.c{i}]\nsource = "{fe}"\ntask = "feature-extraction"\n\n' for i in range(14)))
    env = {"HYBRID_REGISTRY": str(registry), "HYBRID_MAX_COLD_STARTS": str(max_cold_starts), "MODAL_MAX_CONTAINERS": "14"}
    if warm_workers is None:  # the default: as many as cold starts at once, a few at most (runner._warm_workers)
        warm_workers = min(max_cold_starts or os.cpu_count() or 1, DEFAULT_MAX)
    else:
        env["HYBRID_WARM_WORKERS"] = str(warm_workers)
    with served("ray", env=env, timeout_s=600) as server:
        def timed(i: int) -> float:
            started = time.monotonic()
            assert httpx.post(f"{server.url}/predict/c{i}", json={"inputs": "x"}, timeout=600).status_code == 200
            return time.monotonic() - started

        def settled() -> None:  # the warm workers ready (or none asked for), nothing starting
            deadline = time.monotonic() + 180
            while _idle_workers() < warm_workers and time.monotonic() < deadline:
                time.sleep(1)
            time.sleep(10)

        settled()
        first = timed(13)  # with many warm workers, some may still be importing (Ray names them idle first)
        lone_starts = []
        for i in (10, 11, 12):
            settled()
            lone_starts.append(timed(i))
        lone = statistics.median(lone_starts)
        settled()
        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            latencies = sorted(pool.map(timed, range(10)))
        return {"first": first, "lone": lone, "p50": statistics.median(latencies), "max": latencies[-1],
                "all": time.monotonic() - started}


@pytest.mark.timeout(1500)  # four servers, each with 14 cold starts
def test_ten_cold_starts_at_once(benchmark, tiny_models, summary) -> None:  # type: ignore[no-untyped-def]
    """Issue 24 part 5: ten experiments cold at once against a lone cold start of the same server —
    without workers started ahead, with the default number (as many as cold starts at once) and with
    as many as the burst (HYBRID_WARM_WORKERS=10)."""
    fe = tiny_models["feature-extraction"]
    cores = os.cpu_count() or 1
    runs = {f"no warm workers, {cores} cold starts at once": _ten_cold_starts(fe, 0, 0),
            f"{cores} warm workers (the default), {cores} cold starts at once": _ten_cold_starts(fe, 0, None),
            f"10 warm workers, {cores} cold starts at once": _ten_cold_starts(fe, 0, 10),
            "10 warm workers, all ten at once": _ten_cold_starts(fe, 10, 10)}
    name = "ray_ten_cold_starts"
    for label, run in runs.items():
        summary.add(name, f"lone cold start (median of 3), {label}", run["lone"], "s", "", f"client latency, same server; its first: {run['first']:.1f} s")
        summary.add(name, f"ten at once: p50 / lone, {label}", run["p50"] / run["lone"], "×", "≤ 3×", f"p50 {run['p50']:.1f} s")
        summary.add(name, f"ten at once: last / lone, {label}", run["max"] / run["lone"], "×", "≤ 5×", f"last {run['max']:.1f} s")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)

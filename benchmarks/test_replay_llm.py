"""Replay a time-compressed slice of the Azure LLM 2023 trace against the local Ray backend, next to
what the simulator predicts for the same slice: the emulator and the simulator check each other.

Slice: the trace's first 20 minutes, a deterministic pseudo-random 1 % of its requests (≈ 60
requests with irregular gaps, mean ≈ 18 s — sparse enough for windows to run out), one experiment (the tiny feature-extraction model; the trace is one
service). Windows: base 32 s, extension 32 s, activity window 10 s (emulated), max 1 replica, time
compressed ×5 with HYBRID_TIME_SCALE=5 (so the real replay takes ~4 minutes). Requests are sent at
their compressed times (open loop). The simulator runs the same slice in fine mode with the same
policy function, one container, and the cold-start duration measured here (× 5, emulated).

Compared: cold starts (emulator: `cold_start` events; simulator: count) and idle replica-seconds
(emulator: from each replica's ready time to its `scale_to_zero` event, minus time serving;
simulator: idle container-seconds), both in emulated seconds. Stated tolerance: cold starts within
±2, idle replica-seconds within ±20 % (cold starts here take 6–9 s real, a spread the simulator's
single cold-start duration does not model).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from core.events import read_events
from core.keepwarm.decision import NamedPolicy
from core.keepwarm.hybrid import HybridParams, hybrid_policy
from core.serving.registry import Registry
from backends.local_ray.settings import load_ray_settings
from core.sim.simulator import simulate_requests
from core.sim.traces import Request, TraceFormat, read_requests
from tests.conftest import SHARED_LLM

TRACE = SHARED_LLM
SCALE = 5
EVERY = 100
SLICE_S = 20 * 60
BASE, EXTENSION, ACTIVITY = 32, 32, 10  # no gap of the slice lies within 30.2..33.9 s: decisions are not knife-edge


def slice_of_trace() -> list[float]:
    times = []
    start = None
    for i, request in enumerate(read_requests(TRACE, TraceFormat.AZURE_LLM_2023)):
        start = request.time_s if start is None else start
        if request.time_s - start > SLICE_S:
            break
        if (i * 2654435761) % 2**32 < 2**32 // EVERY:  # a deterministic pseudo-random 1-in-EVERY sample
            times.append(request.time_s - start)
    return times


def test_replay_llm_slice_against_the_simulator(benchmark, registry_file: Path, tmp_path: Path, summary) -> None:  # type: ignore[no-untyped-def]
    from backends.local_ray import runner

    times = slice_of_trace()
    events = tmp_path / "events.jsonl"
    registry = tmp_path / "replay.toml"
    fe = Registry.load(registry_file).get("fe")
    registry.write_text(f'[experiments.conversation]\nsource = "{fe.local_path()}"\ntask = "feature-extraction"\n')  # type: ignore[union-attr]
    settings = load_ray_settings(env_file=None, registry_path=registry, time_scale=SCALE, base_warm_time=BASE,
                             extension_time=EXTENSION, activity_window=ACTIVITY, max_containers=1, event_log=events)
    port = free_port()
    running = runner.start(settings, Registry.load(registry), "127.0.0.1", port)
    latencies: list[float] = []
    try:
        async def replay() -> float:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
                t0 = time.time()

                async def one(at: float, i: int) -> None:
                    await asyncio.sleep(max(0.0, t0 + at / SCALE - time.time()))
                    sent = time.time()
                    r = await http.post("/predict/conversation", json={"inputs": f"turn {i}"})
                    assert r.status_code == 200, r.text
                    latencies.append(time.time() - sent)

                await asyncio.gather(*(one(at, i) for i, at in enumerate(times)))
                return t0

        t0 = asyncio.run(replay())
        last_answer = time.time()
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for the final scale-to-zero
            log = read_events(events)
            if log and log[-1]["event"] == "scale_to_zero" and log[-1]["time"] > last_answer - 1:
                break
            time.sleep(0.2)
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    finally:
        runner.stop(running)
    log = read_events(events)
    colds = [e for e in log if e["event"] == "cold_start"]
    downs = [e for e in log if e["event"] == "scale_to_zero"]
    # idle replica-seconds (emulated): each replica from ready to scale-down (the tiny model serves in
    # ~1 ms per request, negligible next to windows of tens of seconds)
    ready = [c["time"] for c in colds]
    emulated_idle = sum(max(0.0, d["time"] - r) for r, d in zip(ready, downs)) * SCALE
    cold_s = statistics.median(c["total_s"] for c in colds) * SCALE
    predicted = simulate_requests(
        (Request(t, "conversation", 0.01) for t in times), NamedPolicy("hybrid", hybrid_policy(HybridParams(BASE, EXTENSION, ACTIVITY))),
        max_containers=1, cold_start_s=cold_s, activity_window_s=ACTIVITY,
    )
    # the simulator stops counting at the trace's end; the emulator's last replica idles its full window
    predicted_idle = predicted.idle_container_minutes * 60 + _last_window(times)
    q = statistics.quantiles(latencies, n=100)
    summary.add("replay_llm", "requests replayed", float(len(times)), "", "", f"first {SLICE_S // 60} min, 1 in {EVERY}, ×{SCALE}")
    summary.add("replay_llm", "latency p50 / p95 / p99", q[49] * 1000, "ms", "", f"p95 {q[94] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")
    summary.add("replay_llm", "cold starts: emulator vs simulator", float(len(colds)), "", "±2", f"simulator {predicted.cold_starts}")
    summary.add("replay_llm", "idle replica-seconds: emulator", emulated_idle, "s (emulated)", "±20 %", f"simulator {predicted_idle:.0f} s")
    benchmark.extra_info.update(cold_emulator=len(colds), cold_simulator=predicted.cold_starts,
                                idle_emulator_s=emulated_idle, idle_simulator_s=predicted_idle,
                                latency_p50_ms=q[49] * 1000, latency_p95_ms=q[94] * 1000, latency_p99_ms=q[98] * 1000)
    assert len(downs) >= len(colds) - 1 and t0 > 0


def _last_window(times: list[float]) -> float:
    """The window decided at the last request, which the emulator's replica idles in full after it."""
    recent = len(times) > 1 and times[-1] - times[-2] <= ACTIVITY
    return float(BASE + EXTENSION if recent else BASE)

"""Fine mode's minute runs (issue 25, part 4): a 2019-trace minute handed over whole (`TraceMinute`) is
replayed with each function's run at once where its plan stays as it is — and must give what the same
requests replayed one by one give, whatever the pool, the policy, the containers' room and cap, the
cold start; and the record's bulk updates must equal the one-by-one ones they stand for."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.experiment_record import ExperimentRecord, arrive_run, complete_run
from core.keepwarm.histogram import LearnedGaps
from core.keepwarm.hybrid import HybridParams
from core.keepwarm.window_count import WindowCount
from core.sim import simulator
from core.sim.shahrad import SHAHRAD
from core.sim.simulator import SimResult, simulate_requests
from core.sim.specs import parse_policy
from core.sim.traces import TraceMinute, spread_time
from tests.conftest import make_settings

SETTINGS = make_settings()
POLICIES = {
    "adaptive": parse_policy("adaptive", SETTINGS),
    "adaptive-4": adaptive_policy(AdaptiveParams(kappa=6.0, fallback=HybridParams(600, 600, 300), concurrent_inputs=4)),
    "hybrid": parse_policy("hybrid", SETTINGS),
    "hybrid-short": parse_policy("hybrid", make_settings(activity_window=10)),  # gaps of a 3-request minute exceed it
    "fixed:600:60": parse_policy("fixed:600:60", SETTINGS),
    "fixed:3": parse_policy("fixed:3", SETTINGS),  # shorter than a sparse minute's gaps
    "histogram": SHAHRAD,
    "prewarm": NamedPolicy("prewarm", lambda a: WindowDecision(300, WindowReason.LEARNED, "", prewarm_after_s=240),
                           steady_gap_s=math.inf),
}


def expanded(minutes: list[TraceMinute]):  # type: ignore[no-untyped-def]
    for minute in minutes:
        yield from minute.requests()


def replay(items, policy: NamedPolicy, **kwargs) -> SimResult:  # type: ignore[no-untyped-def]
    return simulate_requests(items, policy, durations=kwargs.pop("durations"), **kwargs)


def assert_same(at_once: SimResult, one_by_one: SimResult) -> None:
    a, b = at_once.summary(), one_by_one.summary()
    assert a.keys() == b.keys()
    assert a.pop("policy") == b.pop("policy")
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-6), key
    assert at_once.by_experiment.keys() == one_by_one.by_experiment.keys()
    for experiment_id, own in at_once.by_experiment.items():
        assert own.cold_starts == one_by_one.by_experiment[experiment_id].cold_starts, experiment_id
        assert own.idle_container_minutes == pytest.approx(one_by_one.by_experiment[experiment_id].idle_container_minutes,
                                                           rel=1e-9, abs=1e-6), experiment_id


minute_counts = st.dictionaries(st.sampled_from("abcd"), st.integers(1, 400), min_size=1, max_size=4)


@hsettings(max_examples=60, deadline=None)
@given(
    minutes=st.lists(st.tuples(st.integers(1, 400), minute_counts), min_size=1, max_size=12),
    policy=st.sampled_from(sorted(POLICIES)),
    durations=st.fixed_dictionaries({e: st.sampled_from([0.0, 0.01, 0.5, 1.0, 3.0, 7.5, 20.0, 45.0]) for e in "abcd"}),
    per_container=st.sampled_from([1, 2, 4, 32]),
    max_containers=st.sampled_from([1, 2, 3, 10]),
    cold_start_s=st.sampled_from([0.0, 0.0, 30.0]),
)
def test_a_minute_replayed_at_once_gives_what_its_requests_give_one_by_one(
        minutes: list[tuple[int, dict[str, int]]], policy: str, durations: dict[str, float], per_container: int,
        max_containers: int, cold_start_s: float) -> None:
    """Minutes at random distances (a gap of up to 400 minutes: pools that went, pre-warms that came due),
    1–400 requests per function and minute, durations that overlap the next request or not (0.5 s and
    7.5 s sit exactly on a 120- and an 8-request minute's spacing), containers that take 1–32 at once up
    to a cap that makes requests wait."""
    trace, at = [], 0
    for distance, counts in minutes:
        at += distance
        trace.append(TraceMinute((at - 1) * 60, sorted(counts.items())))
    kwargs = dict(max_containers=max_containers, durations=durations, cold_start_s=cold_start_s,
                  concurrent_inputs=per_container, activity_window_s=300.0)
    assert_same(replay(iter(trace), POLICIES[policy], **kwargs), replay(expanded(trace), POLICIES[policy], **kwargs))


def test_a_busy_minute_is_replayed_in_a_few_runs_not_request_by_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes fine mode fast: a function's 3,000 requests of a minute, on one container and on a
    pool of several busy ones, take a handful of steps one by one; the rest go in runs."""
    steps = []
    original = simulator._Replay.step

    def counting(self, *args):  # type: ignore[no-untyped-def]
        steps.append(args[1])
        return original(self, *args)

    monkeypatch.setattr(simulator._Replay, "step", counting)
    trace = [TraceMinute(m * 60, [("light", 3000), ("heavy", 3000)]) for m in range(5)]
    # light: 3000 × 0.01 s a minute, one container; heavy: 3000 × 2 s, 100 in flight on 4 containers of 32
    out = simulate_requests(iter(trace), POLICIES["adaptive"], 10, durations={"light": 0.01, "heavy": 2.0},
                            concurrent_inputs=32)
    assert out.invocations == 30_000
    assert 0 < steps.count("light") < 100 and 0 < steps.count("heavy") < 300
    one_by_one = simulate_requests(expanded(trace), POLICIES["adaptive"], 10, durations={"light": 0.01, "heavy": 2.0},
                                   concurrent_inputs=32)
    assert_same(out, one_by_one)
    assert out.by_experiment["heavy"].cold_starts == 4  # the pool grew to four containers in its first minute


def test_the_retention_looks_at_the_request_before_in_the_trace_exactly() -> None:
    """An experiment is forgotten when the request before its next one in the trace came a week
    (RETENTION_S) after it was last touched: across minutes handed over whole, that request is another
    function's in the same minute — found exactly, as one by one."""
    week = simulator.RETENTION_S
    first = TraceMinute(0, [("a", 1)])  # a: once at 30 s (done at 31)
    # a week later: b's requests come every 2 s from week + 1 s; a's one at 30 s into the minute
    for offset in (-29.0, -30.0, -31.0, -28.0):  # the minute's start around a's last touch + the week
        start = 31.0 + week + offset
        later = TraceMinute(start, [("b", 30), ("a", 1)])
        at_once = simulate_requests(iter([first, later]), POLICIES["adaptive"], 2)
        one_by_one = simulate_requests(expanded([first, later]), POLICIES["adaptive"], 2)
        assert_same(at_once, one_by_one)


def test_trace_minute_before_finds_the_request_before_in_time_order() -> None:
    minute = TraceMinute(120, [("b", 7), ("a", 3), ("c", 60)])
    requests = list(minute.requests())
    for i, request in enumerate(requests):
        expected = None if i == 0 else requests[i - 1].time_s
        assert minute.before(request.time_s, request.experiment_id) == expected
    assert minute.last_s() == requests[-1].time_s == spread_time(120, 59, 60)


def test_window_count_add_run_counts_as_one_by_one() -> None:
    rng = random.Random(3)
    for _ in range(200):
        count, start, window = rng.randint(2, 5000), rng.choice([0.0, 59.0, 86_340.0, 1e9]), rng.choice([30.0, 300.0, 7.0])
        lo = rng.randint(0, count - 1)
        hi = rng.randint(lo + 1, count)
        one, run = WindowCount(window), WindowCount(window)
        for k in range(lo, hi):
            one.add(spread_time(start, k, count))
        run.add_run(lambda k: spread_time(start, k, count), lo, hi)
        assert list(run._buckets) == list(one._buckets) and run._total == one._total


def test_a_record_takes_a_run_of_arrivals_and_completions_as_one_by_one() -> None:
    policy = POLICIES["adaptive"]
    one, run = (ExperimentRecord(0.0, 300.0, policy.learner) for _ in range(2))
    for record in (one, run):
        record.arrive(0.0, True)
        record.complete(0.5)
    times = [1.0 + 0.2 * k for k in range(50)]
    for k, t in enumerate(times):  # each 0.1 s long: ended before the next
        if k:
            one.complete(times[k - 1] + 0.1)
        one.arrive(t, False)
    for k, t in enumerate(times):  # the burst levels are the caller's, one by one
        if k:
            run.levels.complete(times[k - 1] + 0.1)  # type: ignore[union-attr]
        run.levels.arrive(t)  # type: ignore[union-attr]
    arrive_run(run, lambda k: times[k], 0, 50)
    complete_run(run, 49, times[48] + 0.1)
    a, b = one.snapshot("e", 12.0), run.snapshot("e", 12.0)
    assert a.learned.plan == b.learned.plan and a.learned.gaps == b.learned.gaps  # type: ignore[union-attr]
    assert (a.last_request, a.previous_request, a.requests_in_window, a.total_requests, a.in_flight,
            a.last_completion, a.width) == (b.last_request, b.previous_request, b.requests_in_window,
                                            b.total_requests, b.in_flight, b.last_completion, b.width)
    assert one.gaps.histogram.seconds == pytest.approx(run.gaps.histogram.seconds)  # type: ignore[union-attr]


def test_learned_gaps_say_how_long_the_plan_stays_as_it_is() -> None:
    gaps = LearnedGaps(POLICIES["adaptive"].learner)  # type: ignore[arg-type]
    assert gaps.steady_for() == (0, 0)  # nothing computed yet: now
    for _ in range(16):
        gaps.add(1.0)
    first = gaps.learned()
    left, bursts_left = gaps.steady_for()
    assert (left, bursts_left) == (2, 1)  # 16 gaps: recomputed at 18; the first burst gap makes the burst histogram
    gaps.add(1.0)
    assert gaps.learned() is first and gaps.steady_for() == (1, 1)
    gaps.add(1.0)
    assert gaps.learned() is not first  # the mark reached: computed again


def test_on_the_shared_sample_minute_runs_give_what_one_by_one_gives(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every 16th function of the shared 2019 sample, with its durations, containers of 32 up to the cap
    of 10 — the heavy functions' pools of several busy containers, waits at the cap, learned plans."""
    import csv

    from core.sim.traces import TraceFormat, read_function_durations, read_replay, read_requests
    from tests.conftest import SHARED_2019

    with SHARED_2019.open(newline="") as src, (tmp_path / "sample.csv").open("w", newline="") as dst:
        rows = csv.reader(src)
        out = csv.writer(dst)
        out.writerow(next(rows))
        out.writerows(row for i, row in enumerate(rows) if i % 16 == 3)
    durations = read_function_durations(SHARED_2019.with_name("function_durations.csv"))
    kwargs = dict(max_containers=10, durations=durations, concurrent_inputs=32, activity_window_s=300.0)
    fmt = TraceFormat.AZURE_FUNCTIONS_2019
    at_once = replay(read_replay(tmp_path / "sample.csv", fmt), POLICIES["adaptive"], **kwargs)
    assert at_once.invocations > 100_000 and at_once.burst_idle_minutes
    assert_same(at_once, replay(read_requests(tmp_path / "sample.csv", fmt), POLICIES["adaptive"], **kwargs))

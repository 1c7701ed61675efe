"""Activity tracker: per-experiment answers, thread safety, bounded memory."""

from __future__ import annotations

import threading

import pytest

from core.keepwarm.activity import ActivityTracker
from tests.conftest import FakeClock, activity_of


def test_last_and_previous_request_per_experiment() -> None:
    clock = FakeClock()
    tracker = ActivityTracker(activity_window_s=300, clock=clock)
    tracker.record_request("a")
    clock.now += 10
    tracker.record_request("b")
    clock.now += 5
    a = tracker.record_request("a")
    assert (a.last_request, a.previous_request, a.total_requests) == (1015.0, 1000.0, 2)
    b = activity_of(tracker, "b")
    assert b is not None and (b.last_request, b.previous_request) == (1010.0, None)
    assert activity_of(tracker, "never") is None


def test_requests_in_window_counts_only_recent_requests() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(activity_window_s=64, clock=clock)  # 1-second buckets
    for t in (0, 10, 20, 30):
        clock.now = t
        tracker.record_request("e")
    clock.now = 70.5
    snap = activity_of(tracker, "e")
    assert snap is not None and snap.requests_in_window == 3  # the request at t=0 is older than 64 s
    clock.now = 200
    assert activity_of(tracker, "e").requests_in_window == 0  # type: ignore[union-attr]


def test_completion_tracks_in_flight_and_idle_time() -> None:
    clock = FakeClock(100.0)
    tracker = ActivityTracker(activity_window_s=300, clock=clock)
    tracker.record_request("e")
    clock.now = 130.0
    assert activity_of(tracker, "e").idle_s == 0.0  # type: ignore[union-attr]  # still in flight
    tracker.record_completion("e")
    clock.now = 150.0
    snap = activity_of(tracker, "e")
    assert snap is not None and snap.in_flight == 0 and snap.idle_s == pytest.approx(20.0)
    assert tracker.stats().total_completions == 1


def test_whole_process_statistics() -> None:
    clock = FakeClock()
    tracker = ActivityTracker(activity_window_s=10, clock=clock)
    for e in ("a", "b", "a"):
        tracker.record_request(e)
    tracker.record_completion("a")
    stats = tracker.stats()
    assert (stats.total_requests, stats.total_completions, stats.tracked_experiments, stats.in_flight) == (3, 1, 2, 2)


def test_idle_experiments_are_forgotten_but_busy_ones_are_kept() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(activity_window_s=10, retention_s=100, clock=clock)
    tracker.record_request("idle")
    tracker.record_completion("idle")
    tracker.record_request("busy")  # never completes
    clock.now = 101.0
    tracker.record_request("new")
    assert activity_of(tracker, "idle") is None
    assert activity_of(tracker, "busy") is not None
    assert tracker.stats().forgotten_experiments == 1


def test_concurrent_threads_lose_no_request() -> None:
    tracker = ActivityTracker(activity_window_s=300)
    threads, per_thread = 8, 2000

    def worker(n: int) -> None:
        for i in range(per_thread):
            tracker.record_request(f"exp-{(n + i) % 5}")
            tracker.record_completion(f"exp-{(n + i) % 5}")

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    stats = tracker.stats()
    assert stats.total_requests == stats.total_completions == threads * per_thread
    assert sum(s.total_requests for s in tracker.snapshot()) == threads * per_thread
    assert stats.in_flight == 0


def test_memory_bounded_with_100000_distinct_experiments() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(activity_window_s=30, retention_s=60, clock=clock)
    for i in range(100_000):
        clock.now = i * 0.01  # 1000 s in all: only the last 60 s worth of experiments can matter
        tracker.record_request(f"exp-{i}")
        tracker.record_completion(f"exp-{i}")
    assert tracker.stats().tracked_experiments <= 6001
    assert tracker.stats().forgotten_experiments >= 100_000 - 6001
    assert tracker.stats().total_requests == 100_000


def test_bucket_memory_bounded_for_a_hot_experiment() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(activity_window_s=64, clock=clock)
    for i in range(50_000):
        clock.now = i * 0.01
        tracker.record_request("hot")
    state = tracker._experiments["hot"]
    assert len(state.in_window) <= 66
    assert activity_of(tracker, "hot").requests_in_window == pytest.approx(6400, abs=100)  # type: ignore[union-attr]


def test_rejects_non_positive_window() -> None:
    with pytest.raises(ValueError):
        ActivityTracker(activity_window_s=0)


def test_the_window_count_kept_as_a_running_total_equals_its_buckets_summed() -> None:
    """The count is read per request (fine-mode simulations read it millions of times), so it is kept
    as a running total: after every arrival, fold and read, it equals the buckets' counts summed."""
    import random

    from core.keepwarm.window_count import WindowCount

    rng = random.Random(7)
    count, t = WindowCount(64.0), 0.0
    for _ in range(5000):
        t += rng.expovariate(2.0) if rng.random() < 0.95 else rng.uniform(30, 200)  # bursts and gaps
        count.add(t, rng.choice((1, 1, 1, 3)))
        assert count.total(t) == sum(int(c) for _, c in count._buckets) > 0
        if rng.random() < 0.3:  # a read later on (buckets expire; a later arrival counts again)
            t += rng.uniform(0, 100)
            assert count.total(t) == sum(int(c) for _, c in count._buckets)

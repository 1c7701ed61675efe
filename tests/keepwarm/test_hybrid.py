"""The hybrid decision: isolated → base, recent activity → base + extension, per experiment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.decision import WindowReason
from core.keepwarm.hybrid import HybridParams, hybrid_window
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S
from tests.conftest import FakeClock, activity_of

PARAMS = HybridParams(base_s=900, extension_s=900, activity_window_s=300)


def arrivals(times: list[float], experiment: str = "e", params: HybridParams = PARAMS):
    clock = FakeClock(0.0)
    tracker = ActivityTracker(params.activity_window_s, clock=clock)
    snap = None
    for t in times:
        clock.now = t
        snap = tracker.record_request(experiment)
    return snap, tracker, clock


def test_no_activity_gets_base() -> None:
    d = hybrid_window(None, PARAMS)
    assert (d.window_s, d.reason) == (900, WindowReason.NO_ACTIVITY)


def test_isolated_request_gets_base() -> None:
    snap, *_ = arrivals([0.0])
    d = hybrid_window(snap, PARAMS)
    assert (d.window_s, d.reason) == (900, WindowReason.ISOLATED)


def test_request_with_another_inside_the_window_gets_base_plus_extension() -> None:
    snap, *_ = arrivals([0.0, 120.0])
    d = hybrid_window(snap, PARAMS)
    assert (d.window_s, d.reason) == (1800, WindowReason.RECENT_ACTIVITY)
    assert "120.0s" in d.detail


def test_window_edge_is_inclusive() -> None:
    """A previous request exactly `activity_window` seconds earlier counts as recent; a hair later does not."""
    at_edge, *_ = arrivals([0.0, 300.0])
    past_edge, *_ = arrivals([0.0, 300.001])
    assert hybrid_window(at_edge, PARAMS).window_s == 1800
    assert hybrid_window(past_edge, PARAMS).window_s == 900


def test_only_the_latest_gap_counts() -> None:
    snap, *_ = arrivals([0.0, 10.0, 500.0])  # busy earlier, isolated now
    assert hybrid_window(snap, PARAMS).reason is WindowReason.ISOLATED


def test_decision_is_per_experiment() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, clock=clock)
    tracker.record_request("busy")
    clock.now = 60
    tracker.record_request("busy")
    tracker.record_request("quiet")
    assert hybrid_window(activity_of(tracker, "busy"), PARAMS).window_s == 1800
    assert hybrid_window(activity_of(tracker, "quiet"), PARAMS).window_s == 900


def test_expiry_is_measured_from_the_end_of_the_last_request() -> None:
    snap, tracker, clock = arrivals([0.0])
    clock.now = 5.0
    tracker.record_completion("e")
    clock.now = 50.0
    snap = activity_of(tracker, "e")
    d = hybrid_window(snap, PARAMS)
    assert d.expires_at(snap) == 5.0 + 900


@given(
    base=st.integers(MODAL_MIN_WINDOW_S, MODAL_MAX_WINDOW_S),
    ext_fraction=st.floats(0, 1),
    activity_window=st.integers(1, 7200),
    gaps=st.lists(st.floats(0, 10_000, allow_nan=False), min_size=1, max_size=20),
)
def test_window_is_one_of_two_values_within_modal_bounds(base, ext_fraction, activity_window, gaps) -> None:
    ext = int((MODAL_MAX_WINDOW_S - base) * ext_fraction)
    params = HybridParams(base, ext, activity_window)
    times = [0.0]
    for g in gaps:
        times.append(times[-1] + g)
    snap, *_ = arrivals(times, params=params)
    d = hybrid_window(snap, params)
    assert d.window_s in {base, base + ext}
    assert MODAL_MIN_WINDOW_S <= d.window_s <= MODAL_MAX_WINDOW_S
    recent = len(times) > 1 and times[-1] - times[-2] <= activity_window
    assert d.window_s == (base + ext if recent else base)

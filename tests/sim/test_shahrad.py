"""The Shahrad et al. reference policy as the paper defines it: representativeness by the coefficient of
variation of the bin counts, head and tail with 10 % margins, the out-of-range forecast."""

from __future__ import annotations

import math

import pytest

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.decision import WindowReason
from core.keepwarm.histogram import BINS, IdleHistogram
from core.sim.shahrad import CV_THRESHOLD, SHAHRAD, ShahradLearner, bin_count_cv, idle_time_counts, shahrad_window


def histogram(minutes: dict[int, int], out_of_range_s: list[float] = (), sub_minute: int = 0) -> IdleHistogram:
    hist = IdleHistogram()
    for minute, count in minutes.items():
        hist.add(minute * 60.0, count)
    for gap in out_of_range_s:
        hist.add(gap)
    if sub_minute:
        hist.add(1.0, sub_minute)
    return hist


@pytest.mark.parametrize(("populated_bins", "cv", "representative"), [
    (1, math.sqrt(239), True),  # a single idle time: one spike
    (10, math.sqrt(23), True),
    (40, math.sqrt(5), True),  # k equal bins of 240: CV = √(240/k − 1)
    (60, math.sqrt(3), False),
    (120, 1.0, False),
    (239, math.sqrt(1 / 239), False),
])
def test_representativeness_is_the_coefficient_of_variation_of_the_bin_counts(populated_bins: int, cv: float,
                                                                               representative: bool) -> None:
    hist = histogram({minute: 7 for minute in range(1, populated_bins + 1)})
    assert bin_count_cv(idle_time_counts(hist)) == pytest.approx(cv, rel=1e-12)
    assert (cv >= CV_THRESHOLD) is representative
    plan = ShahradLearner().plan(hist)
    assert plan.representative is representative
    if not representative:  # the standard keep-alive: no pre-warm, loaded for the whole range
        assert (plan.keep_min, plan.prewarm_min) == (BINS, 0)


def test_sub_minute_gaps_are_one_busy_minute_not_idle_times() -> None:
    """At the trace's one-minute resolution an IT is the distance between invocation minutes."""
    assert math.isnan(bin_count_cv(idle_time_counts(histogram({}, sub_minute=50))))
    plan = ShahradLearner().plan(histogram({}, sub_minute=50))
    assert not plan.representative and plan.keep_min == BINS
    with_bursts = ShahradLearner().plan(histogram({30: 20}, sub_minute=5000))
    assert (with_bursts.prewarm_min, with_bursts.prewarm_min + with_bursts.keep_min) == (27, 35)


def test_head_and_tail_with_10_percent_margins() -> None:
    # ITs of 10..19 minutes, 10 each: the 5th percentile is in bin 10 (head: its lower edge, 10 − 10 % = 9),
    # the 99th in bin 19 (tail: its upper edge, 20 + 10 % = 22): pre-warm after 9, loaded until 22
    plan = ShahradLearner().plan(histogram({minute: 10 for minute in range(10, 20)}))
    assert (plan.prewarm_min, plan.keep_min, plan.representative) == (9, 13, True)
    # a head in the first minute: no pre-warm (10 % less than one minute rounds to none), keep until the tail
    plan = ShahradLearner().plan(histogram({1: 50, 2: 30, 3: 20}))
    assert (plan.prewarm_min, plan.keep_min) == (0, math.ceil(4 * 1.1))


def test_shahrad_policy_prewarms_a_regular_experiment() -> None:
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, learner=SHAHRAD.learner)
    activity = None
    for i in range(30):
        activity = tracker.record_request("cron", at=i * 1800.0)  # every 30 minutes
    regular = shahrad_window(activity)
    assert regular.prewarm_after_s == 27 * 60  # 5th percentile (bin 30, lower edge) − 10 %
    assert regular.prewarm_after_s + regular.window_s == 35 * 60  # 99th percentile (bin 30, upper edge 31) + 10 %, rounded up
    assert regular.reason is WindowReason.LEARNED


def test_mostly_out_of_range_idle_times_are_forecast() -> None:
    """Three ITs of 5 h and one of 10 min: most beyond the 4-hour range. The ARIMA(0,0,0) forecast is
    their mean, 227.5 min; pre-warm 15 % before it, keep loaded for 2 × 15 % of it."""
    plan = ShahradLearner().plan(histogram({10: 1}, out_of_range_s=[5 * 3600.0] * 3))
    assert (plan.prewarm_min, plan.keep_min, plan.representative) == (math.floor(227.5 * 0.85), math.ceil(227.5 * 0.3), True)
    assert (plan.prewarm_min, plan.keep_min) == (193, 69)
    half = ShahradLearner().plan(histogram({10: 2}, out_of_range_s=[5 * 3600.0] * 2))  # half, not most: the histogram
    assert half.prewarm_min == 9


def test_shahrad_policy_falls_back_when_not_representative() -> None:
    hist = IdleHistogram()
    for gap in range(0, 240 * 60, 60):  # idle times spread evenly: coefficient of variation < 2
        hist.add(float(gap))
    plan = ShahradLearner().plan(hist)
    assert not plan.representative and (plan.keep_min, plan.prewarm_min) == (240, 0)
    assert (shahrad_window(None).window_s, shahrad_window(None).reason) == (240 * 60, WindowReason.FIXED)

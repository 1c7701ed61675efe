"""The Shahrad et al. reference policy: what it learns from a regular experiment, and its fallback."""

from __future__ import annotations

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.decision import WindowReason
from core.keepwarm.histogram import IdleHistogram
from core.sim.shahrad import SHAHRAD, ShahradLearner, shahrad_window


def test_shahrad_policy_prewarms_a_regular_experiment() -> None:
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, learner=SHAHRAD.learner)
    activity = None
    for i in range(30):
        activity = tracker.record_request("cron", at=i * 1800.0)  # every 30 minutes
    regular = shahrad_window(activity)
    assert regular.prewarm_after_s == 27 * 60  # 5th percentile (30 min) − 10 %
    assert regular.prewarm_after_s + regular.window_s == 35 * 60  # 99th percentile (31 min bin edge) + 10 %, rounded up


def test_shahrad_policy_falls_back_when_not_representative() -> None:
    hist = IdleHistogram()
    for gap in range(0, 240 * 60, 60):  # idle times spread evenly: coefficient of variation < 2
        hist.add(float(gap))
    plan = ShahradLearner().plan(hist)
    assert not plan.representative and (plan.keep_min, plan.prewarm_min) == (240, 0)
    assert (shahrad_window(None).window_s, shahrad_window(None).reason) == (240 * 60, WindowReason.FIXED)

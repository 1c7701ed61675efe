"""Cold-start-aware plans: each experiment's measured cold start, as its activity keeps it, prices its
plans and leads its pre-warms — the pure parts (the backends' appliers are tested with each backend)."""

from __future__ import annotations

import pytest

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy, best_plan, cold_start_price
from core.keepwarm.cold_start_time import TYPICAL_COLD_START_S, PrewarmLead, measured, merged, price_factor
from core.keepwarm.controller import PlanPhase, plan_pool
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.histogram import IdleHistogram
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity
from tests.conftest import FakeClock

#: No pre-warm (every idle time seen once per period at most): the keep window alone answers the price.
KEEP_ONLY = AdaptiveParams(kappa=40, prewarm_evidence=10**6)
#: Idle times of 3 minutes to over 3 hours, three times each.
SPREAD = [m * 60.0 for m in (3, 6, 10, 15, 22, 30, 40, 55, 75, 100, 140, 200)] * 3


def histogram(gaps: list[float]) -> IdleHistogram:
    hist = IdleHistogram()
    for gap in gaps:
        hist.add(gap)
    return hist


def test_the_estimate_follows_a_slower_start_at_once_and_a_faster_one_halfway() -> None:
    assert measured(None, 12.0) == 12.0
    assert measured(12.0, 40.0) == 40.0  # slower: at once (a pre-warm must cover it)
    assert measured(40.0, 10.0) == 25.0  # faster: halfway
    assert measured(measured(25.0, 10.0), 10.0) == pytest.approx(13.75)  # one slow start fades
    assert measured(5.0, -1.0) == 2.5  # a clock step back counts as no time
    assert merged(None, 3.0) == 3.0 and merged(3.0, None) == 3.0 and merged(3.0, 7.0) == 7.0 and merged(None, None) is None


def test_a_cold_start_is_priced_by_its_length_half_fixed_half_per_second() -> None:
    assert price_factor(None) == 1.0 and price_factor(TYPICAL_COLD_START_S) == 1.0
    assert price_factor(90.0) == 2.0 and price_factor(0.0) == 0.5
    hist = histogram(SPREAD)
    typical = cold_start_price(hist, KEEP_ONLY)
    assert cold_start_price(hist, KEEP_ONLY, 90.0) == pytest.approx(2 * typical)
    assert cold_start_price(hist, KEEP_ONLY, 2.0) == pytest.approx(typical * 32 / 60)


def test_a_slow_loading_experiment_is_kept_longer_and_a_fast_one_shorter() -> None:
    hist = histogram(SPREAD)
    keeps = {c: best_plan(hist, KEEP_ONLY, c).keep_min for c in (2.0, None, 60.0, 120.0)}
    assert keeps == {2.0: 3, None: 15, 60.0: 40, 120.0: 55}
    assert "(120.0 s measured)" in best_plan(hist, KEEP_ONLY, 120.0).detail
    assert "measured" not in best_plan(hist, KEEP_ONLY).detail  # not measured: priced as typical


def test_a_cron_job_that_starts_slowly_is_kept_warm_instead_of_pre_warmed_when_that_pays() -> None:
    """Every 30 min, priced at κ 80: a typical start is pre-warmed (scaled to zero between); a 2-minute
    start is worth keeping warm through the gap."""
    params = AdaptiveParams(kappa=80)
    hist = histogram([1800.0] * 12 + [600.0] * 2)
    typical, slow = best_plan(hist, params), best_plan(hist, params, 120.0)
    assert (typical.prewarm_min, typical.keep_min) == (30, 1)
    assert (slow.prewarm_min, slow.keep_min) == (0, 60)


def test_the_tracker_keeps_the_measured_cold_start_and_the_plan_follows_it() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, retention_s=10**6, clock=clock, learner=adaptive_policy(KEEP_ONLY).learner)
    at = 0.0
    for gap in SPREAD:
        tracker.record_request("e", at=at)
        tracker.record_completion("e", at=at + 1)
        at += gap
    clock.now = at
    tracker.record_cold_start("unknown", 50.0)  # no activity of it: nothing to keep
    assert [a.experiment_id for a in tracker.snapshot()] == ["e"]
    before = tracker.snapshot()[0]
    assert before.cold_start_s is None and before.learned is not None and before.learned.plan.keep_min == 15
    tracker.record_cold_start("e", 120.0)
    after = tracker.snapshot()[0]
    assert after.cold_start_s == 120.0 and after.learned is not None and after.learned.plan.keep_min == 55
    tracker.record_cold_start("e", 2.0)  # faster: halfway, 61 s
    assert tracker.snapshot()[0].cold_start_s == 61.0


def test_the_measured_cold_start_outlives_the_process_and_merges_across_processes() -> None:
    tracker = ActivityTracker(300, learner=adaptive_policy(KEEP_ONLY).learner)
    tracker.record_request("e", at=0.0)
    tracker.record_cold_start("e", 45.0)
    record = tracker.export("e")
    assert record is not None and record.cold_start_s == 45.0
    assert DurableActivity.from_dict(record.to_dict()) == record
    restarted = ActivityTracker(300, learner=adaptive_policy(KEEP_ONLY).learner)
    restarted.restore(record)
    assert restarted.export("e").cold_start_s == 45.0  # type: ignore[union-attr]
    other = ActivityTracker(300)
    other.record_request("e", at=1.0)
    other.record_cold_start("e", 20.0)
    other.absorb(record)  # another process's history of the same experiment: the slower start
    assert other.export("e").cold_start_s == 45.0  # type: ignore[union-attr]
    old = {k: v for k, v in record.to_dict().items() if k != "cold_start_s"}  # written by an older version
    assert DurableActivity.from_dict(old).cold_start_s is None


def test_a_batch_carries_its_processs_cold_starts_to_the_folding_tracker() -> None:
    batch = ArrivalBatch(first_at=10.0, last_at=10.0, count=0)  # no arrival since the last flush: a start alone
    batch.cold_started(80.0)
    batch.cold_started(20.0)
    assert ArrivalBatch.from_dict(batch.to_dict()).cold_start_s == 50.0
    reconciler = ActivityTracker(300)
    reconciler.record_request("e", at=0.0)
    reconciler.fold("e", ArrivalBatch.from_dict(batch.to_dict()))
    assert reconciler.snapshot()[0].cold_start_s == 50.0


def test_a_prewarm_starts_the_measured_cold_start_before_the_request_is_due() -> None:
    """Pre-warm 20 min after each request, lead 60 s: an experiment whose containers take 150 s to start
    is pinned 150 s before the request is due, one not measured 60 s before (in the tracker's clock:
    at time scale 10, ten times as long)."""
    decision = WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=1200)
    policy = NamedPolicy("prewarm", lambda _: decision)
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, retention_s=3600, clock=clock)
    tracker.record_request("slow", at=0.0)
    tracker.record_request("plain", at=0.0)
    tracker.record_completion("slow", at=1.0)
    tracker.record_completion("plain", at=1.0)
    tracker.record_cold_start("slow", 150.0)

    def phases(lead: PrewarmLead, since: float) -> dict[str, PlanPhase]:
        clock.now = since
        return {a.experiment_id: plan_pool(a, policy, lead).phase for a in tracker.snapshot()}

    lead = PrewarmLead(60.0)
    assert phases(lead, 1200 - 151) == {"slow": PlanPhase.AWAIT_PREWARM, "plain": PlanPhase.AWAIT_PREWARM}
    assert phases(lead, 1200 - 149) == {"slow": PlanPhase.PREWARM, "plain": PlanPhase.AWAIT_PREWARM}
    assert phases(lead, 1200 - 59) == {"slow": PlanPhase.PREWARM, "plain": PlanPhase.PREWARM}
    plans = {a.experiment_id: plan_pool(a, policy, lead) for a in tracker.snapshot()}
    assert (plans["slow"].prewarm_lead_s, plans["slow"].cold_start_s) == (150.0, 150.0)
    assert (plans["plain"].prewarm_lead_s, plans["plain"].cold_start_s) == (60.0, None)
    assert PrewarmLead(60.0, time_scale=10).of(150.0) == 1500.0 and PrewarmLead(60.0, 10).of(None) == 600.0

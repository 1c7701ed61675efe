"""The adaptive keep-warm policy: what it learns, how it prices each experiment's cold starts, how far
it trusts a short history, its bounds, its state, and how it is chosen."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

import core.keepwarm.adaptive as adaptive
from core.http.app import build_inprocess_app
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.adaptive import PRIOR_MEAN_GAP_MIN, AdaptiveParams, adaptive_policy, best_plan, cold_start_price
from core.keepwarm.decision import NamedPolicy, WindowReason
from core.keepwarm.histogram import IdleHistogram, LearnedGaps
from core.keepwarm.hybrid import HybridParams, hybrid_window
from core.keepwarm.policies import policy_from_settings
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S
from tests.conftest import FakeClock, make_settings

PARAMS = AdaptiveParams()


def replay(gaps_s: list[float], policy: NamedPolicy = adaptive_policy(PARAMS)):  # type: ignore[no-untyped-def]
    """Requests separated by the given gaps, through a real tracker; the decision after the last one."""
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, learner=policy.learner)
    t = 0.0
    activity = tracker.record_request("e", at=t)
    for gap in gaps_s:
        t += gap
        activity = tracker.record_request("e", at=t)
    return activity, policy.decide(activity)


def test_regular_arrivals_every_10_minutes_learn_a_window_just_above_10_minutes_or_a_prewarm() -> None:
    _, decision = replay([600.0] * 40)
    assert decision.reason is WindowReason.LEARNED
    if decision.prewarm_after_s is None:
        assert 600 <= decision.window_s <= 720
    else:  # scale to zero, and be back when the next request is due (10 minutes after the last)
        assert 540 <= decision.prewarm_after_s <= 600 < decision.prewarm_after_s + decision.window_s


def test_a_first_request_is_decided_by_the_prior_and_nothing_remembered_by_the_hybrid_policy() -> None:
    _, decision = replay([])  # no gap yet: the prior alone, at the price of an unknown experiment (κ)
    assert (decision.window_s, decision.prewarm_after_s, decision.reason) == (3600, None, WindowReason.LEARNED)
    assert decision.detail.startswith("learned from the prior alone: keep 60 min; a cold start priced 320 idle min")
    expected = hybrid_window(None, PARAMS.fallback)
    assert adaptive_policy(PARAMS).decide(None) == adaptive_policy(PARAMS).decide(None)
    assert (adaptive_policy(PARAMS).decide(None).window_s, expected.window_s) == (900, 900)


def test_a_cold_start_is_priced_by_the_experiments_mean_gap() -> None:
    """κ_e = κ · (τ + ḡ_e) / (τ + ḡ₀): κ for an unknown experiment, less for a busy one, more for a rare one."""
    assert PRIOR_MEAN_GAP_MIN == pytest.approx(47.0749, abs=1e-4)
    assert cold_start_price(IdleHistogram(), PARAMS) == 320.0
    busy, rare = IdleHistogram(), IdleHistogram()
    busy.add(15 * 60.0, 1000)  # every 15 minutes: τ
    rare.add(4 * 3600.0, 1000)  # every 4 hours (beyond the histogram's range: its mean still counts)
    mean_busy = (1000 * 15 + 2 * PRIOR_MEAN_GAP_MIN) / 1002
    assert cold_start_price(busy, PARAMS) == pytest.approx(320 * (15 + mean_busy) / (15 + PRIOR_MEAN_GAP_MIN))
    assert cold_start_price(busy, PARAMS) == pytest.approx(154.98, abs=0.01)
    assert cold_start_price(rare, PARAMS) == pytest.approx(1312.56, abs=0.01)


def test_the_same_idle_times_are_bridged_for_a_rarely_used_experiment_not_for_a_busy_one() -> None:
    """Both experiments pause for the same 12 idle times; the busy one also serves 30 requests a
    second before each. The rare one's owner sees a cold start in every other request: its 45- and
    50-minute pauses are worth bridging; the busy one's are not (a cold start there is 1 in 30)."""
    idle = [100, 5, 110, 45, 130, 150, 6, 170, 50, 190, 210, 230]
    _, rare = replay([m * 60.0 for m in idle])
    _, busy = replay([gap for m in idle for gap in [1.0] * 30 + [m * 60.0]])
    assert (rare.window_s, rare.prewarm_after_s) == (50 * 60, None)
    assert (busy.window_s, busy.prewarm_after_s) == (6 * 60, None)
    assert "priced 577 idle min, mean gap 97 min" in rare.detail and "priced 96 idle min, mean gap 4 min" in busy.detail


def test_a_prewarm_needs_an_idle_time_seen_three_times() -> None:
    """Pre-warming at p turns every shorter gap into a cold start: two equal gaps are a coincidence."""
    def plan(repeats: int, evidence: int):  # type: ignore[no-untyped-def]
        hist = IdleHistogram()
        hist.add(100 * 60.0, repeats)
        chosen = best_plan(hist, AdaptiveParams(prewarm_evidence=evidence))
        return chosen.prewarm_min, chosen.keep_min

    assert plan(2, evidence=3) == (0, 60)
    assert plan(2, evidence=1) == (100, 60)  # what a bet on a single repetition would do
    assert plan(3, evidence=3) == (100, 60)


def test_the_prior_fades_as_gaps_accumulate() -> None:
    """Every 30 minutes: the prior (pauses of any length are possible) keeps 60 minutes at first; once
    the regularity outweighs it, the experiment is scaled to zero and brought back at 30 minutes."""
    def plan(gaps: int) -> tuple[int, int]:
        hist = IdleHistogram()
        hist.add(30 * 60.0, gaps)
        chosen = best_plan(hist, PARAMS)
        return chosen.prewarm_min, chosen.keep_min

    assert [plan(n) for n in (1, 4, 8, 9, 40)] == [(0, 60), (0, 60), (0, 60), (30, 60), (30, 60)]


def test_bursty_then_silent_traffic_shrinks_the_window() -> None:
    _, bursty = replay([480.0] * 30)  # every 8 minutes
    _, silent = replay([480.0] * 30 + [5 * 3600.0] * 60)  # then hours of silence between requests
    keep = lambda d: (d.prewarm_after_s or 0) + d.window_s  # noqa: E731
    assert keep(silent) < keep(bursty)
    assert silent.window_s < bursty.window_s


@given(
    gaps=st.lists(st.one_of(st.floats(0, 48 * 3600, allow_nan=False), st.sampled_from([0.0, 59.9, 60.0, 600.0, 14_399.0, 14_400.0])),
                  min_size=0, max_size=60),
    kappa=st.floats(0.1, 100_000),
    owner_minutes=st.floats(0.1, 1_000),
    prior=st.floats(0.0, 50),
    evidence=st.integers(1, 5),
)
@hsettings(max_examples=150, deadline=None)
def test_the_window_always_stays_within_modal_bounds(gaps: list[float], kappa: float, owner_minutes: float,
                                                     prior: float, evidence: int) -> None:
    params = AdaptiveParams(kappa=kappa, owner_minutes=owner_minutes, prior=prior, prewarm_evidence=evidence)
    policy = adaptive_policy(params)
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, learner=policy.learner)
    t = 0.0
    for gap in [0.0] + gaps:  # the decision after every request, not only the last
        t += gap
        decision = policy.decide(tracker.record_request("e", at=t))
        assert MODAL_MIN_WINDOW_S <= decision.window_s <= MODAL_MAX_WINDOW_S
        assert decision.prewarm_after_s is None or 0 < decision.prewarm_after_s < 4 * 3600


def test_the_policy_never_writes_into_the_activity_it_reads() -> None:
    activity, _ = replay([600.0] * 10)
    before = activity.learned
    policy = adaptive_policy(PARAMS)
    assert policy.decide(activity) == policy.decide(activity)
    # learned at 9 gaps: the 10th is less than 1/8 more (recomputed at 9 + ⌈9/8⌉ = 11)
    assert activity.learned is before and activity.learned.gaps == 9  # type: ignore[union-attr]
    with pytest.raises(AttributeError):  # the snapshot and its learned plan are frozen
        activity.learned.gaps = 0  # type: ignore[misc,union-attr]


def test_decisions_cost_o1_amortised_and_the_histogram_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = adaptive.best_plan

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(adaptive, "best_plan", counting)
    policy = adaptive_policy(PARAMS)
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, learner=policy.learner)
    for i in range(200_000):
        activity = tracker.record_request("e", at=i * 7.0)
        policy.decide(activity)
    assert activity.learned is not None and activity.learned.gaps >= 199_999 * 8 // 9  # recomputed lazily
    assert calls["n"] <= 120  # recomputed after ≥ 1/8 growth: O(log n) times in all (log_1.125 200,000 ≈ 104)
    histogram = IdleHistogram()
    for i in range(200_000):
        histogram.add(float(i % 20_000))
    assert histogram.total == 200_000 and sys.getsizeof(histogram.counts) <= 2048


def test_a_plan_is_recomputed_after_its_gaps_or_its_idle_times_grew_by_an_eighth() -> None:
    """A busy experiment's sub-minute gaps cannot hold back what its idle times teach, and the other way round."""
    computed: list[tuple[int, int]] = []

    class Recording:
        per_container = 1

        def plan(self, histogram: IdleHistogram, bursts: IdleHistogram | None = None,  # type: ignore[no-untyped-def]
                 cold_start_s: float | None = None):
            computed.append((histogram.total, histogram.idle_times))
            return best_plan(histogram, PARAMS)

    gaps = LearnedGaps(Recording())
    for _ in range(8):  # 10-minute pauses: recomputed at each while there are few
        gaps.add(600.0)
        gaps.learned()
    gaps.add(1.0, 1000)  # a burst: the gaps grew, the idle times did not
    gaps.learned()
    gaps.add(600.0)  # one more pause: the gaps grew by 1/1008, the idle times by 1/8
    gaps.learned()
    gaps.add(600.0)
    gaps.learned()
    assert computed == [(n, n) for n in range(1, 9)] + [(1008, 8), (1009, 9)]
    assert sys.getsizeof(gaps.histogram.counts) + 8 * 8 <= 2048
    gaps.add_burst(30.0)  # the first burst gap: a plan for the extra containers too
    gaps.learned()
    assert computed[-1] == (1010, 10)


def test_health_shows_which_policy_decided_and_why(registry_file, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HYBRID_POLICY", "adaptive")
    settings = make_settings(registry_path=registry_file)
    with TestClient(build_inprocess_app(settings)) as client:
        for _ in range(6):
            client.post("/predict/fe", json={"inputs": "x"})
        health = client.get("/health").json()
    assert health["scaling"]["policy"] == "adaptive"
    window = health["scaling"]["experiments"]["fe"]
    assert window["policy"] == "adaptive" and window["reason"] == "learned" and "learned from 5 gaps" in window["detail"]
    assert health["configuration"]["HYBRID_POLICY"] == "adaptive"


def test_health_and_experiments_show_the_burst_window(registry_file, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """An experiment whose bursts (three requests at once, one a container) never come back within its
    window: `/health` shows its plan's two windows, `/experiments` its burst window."""
    monkeypatch.setenv("HYBRID_POLICY", "adaptive")
    monkeypatch.setenv("MODAL_CONCURRENT_INPUTS", "1")
    settings = make_settings(registry_path=registry_file)
    with TestClient(build_inprocess_app(settings)) as client:
        tracker = client.app.state.request_path.controller.tracker  # type: ignore[attr-defined]
        gaps = [60, 600, 900, 120, 780] * 8  # irregular (no pre-warm); a burst every 8th request
        t = tracker._clock() - sum(gaps)  # the history: 40 requests up to now
        for i, gap in enumerate(gaps):
            n = 3 if i % 8 == 0 else 1
            for _ in range(n):
                tracker.record_request("fe", at=t)
            for _ in range(n):
                tracker.record_completion("fe", at=t + 20)
            t += gap
        health = client.get("/health").json()
        rows = {row["id"]: row for row in client.get("/experiments").json()}
    window = health["scaling"]["experiments"]["fe"]
    assert window["burst_window_s"] == 60 and window["scaledown_window_s"] > 60, window
    assert window["plan"].startswith("keep extra containers 60s, the last one")
    assert rows["fe"]["burst_window_s"] == 60


def test_the_default_policy_stays_the_hybrid_one() -> None:
    settings = make_settings()
    policy = policy_from_settings(settings)
    assert settings.policy_name == "hybrid" and policy.name == "hybrid" and policy.learner is None
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, clock=clock)
    for t in (0.0, 100.0, 1000.0):  # recent activity, then an isolated request
        clock.now = t
        activity = tracker.record_request("e")
        assert policy.decide(activity) == hybrid_window(activity, HybridParams(900, 900, 300))
    assert policy.decide(None) == hybrid_window(None, HybridParams(900, 900, 300))


def test_an_idle_history_round_trips_through_bytes_with_its_summed_seconds() -> None:
    from core.keepwarm.histogram import BINS, IdleHistogram, LearnedGaps

    history = IdleHistogram()
    history.add(30.0)
    history.add(600.0, times=3)
    history.add(BINS * 60 + 5.0)
    copy = IdleHistogram.from_bytes(history.to_bytes())
    assert (list(copy.counts), copy.total, copy.out_of_range, copy.seconds) == (
        list(history.counts), 5, 1, 30.0 + 1800.0 + BINS * 60 + 5.0)
    older = history.to_bytes()[:16] + history.to_bytes()[24:]  # a copy written before seconds were kept
    assert IdleHistogram.from_bytes(older).total == 5 and IdleHistogram.from_bytes(older).seconds == 0.0
    merged = LearnedGaps(learner=None, histogram=IdleHistogram())  # type: ignore[arg-type]
    merged.merge(copy)
    merged.merge(copy)
    assert merged.histogram.total == 10 and merged.histogram.seconds == 2 * copy.seconds

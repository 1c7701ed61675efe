"""The adaptive keep-warm policy: what it learns, its bounds, its state, and how it is chosen."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

import core.keepwarm.adaptive as adaptive
from core.http.app import build_inprocess_app
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy
from core.keepwarm.decision import NamedPolicy, WindowReason
from core.keepwarm.histogram import IdleHistogram
from core.keepwarm.hybrid import HybridParams, hybrid_window
from core.keepwarm.policies import policy_from_settings
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S, load_settings
from tests.conftest import FakeClock

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


def test_a_single_request_falls_back_to_the_hybrid_policy() -> None:
    activity, decision = replay([])
    expected = hybrid_window(activity, PARAMS.fallback)
    assert (decision.window_s, decision.reason) == (expected.window_s, expected.reason)
    assert "too little history" in decision.detail


def test_bursty_then_silent_traffic_shrinks_the_window() -> None:
    _, bursty = replay([480.0] * 30)  # every 8 minutes
    _, silent = replay([480.0] * 30 + [5 * 3600.0] * 60)  # then hours of silence between requests
    keep = lambda d: (d.prewarm_after_s or 0) + d.window_s  # noqa: E731
    assert keep(silent) < keep(bursty)
    assert silent.window_s < bursty.window_s


@given(
    gaps=st.lists(st.floats(0, 48 * 3600, allow_nan=False), min_size=0, max_size=60),
    kappa=st.floats(0.1, 10_000),
)
@hsettings(max_examples=80, deadline=None)
def test_the_window_always_stays_within_modal_bounds(gaps: list[float], kappa: float) -> None:
    _, decision = replay(gaps, adaptive_policy(AdaptiveParams(kappa=kappa)))
    assert MODAL_MIN_WINDOW_S <= decision.window_s <= MODAL_MAX_WINDOW_S
    assert decision.prewarm_after_s is None or 0 < decision.prewarm_after_s < 4 * 3600


def test_the_policy_never_writes_into_the_activity_it_reads() -> None:
    activity, _ = replay([600.0] * 10)
    before = activity.learned
    policy = adaptive_policy(PARAMS)
    assert policy.decide(activity) == policy.decide(activity)
    assert activity.learned is before and activity.learned.gaps == 10  # type: ignore[union-attr]
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
    for i in range(1_000_000):
        activity = tracker.record_request("e", at=i * 7.0)
        policy.decide(activity)
    assert activity.learned is not None and activity.learned.gaps >= 999_999 * 8 // 9  # recomputed lazily
    assert calls["n"] <= 150  # recomputed after ≥ 1/8 growth: O(log n) times in all
    histogram = IdleHistogram()
    for i in range(1_000_000):
        histogram.add(float(i % 20_000))
    assert histogram.total == 1_000_000 and sys.getsizeof(histogram.counts) <= 2048


def test_health_shows_which_policy_decided_and_why(registry_file, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HYBRID_POLICY", "adaptive")
    settings = load_settings(env_file=None, registry_path=registry_file)
    with TestClient(build_inprocess_app(settings)) as client:
        for _ in range(6):
            client.post("/predict/fe", json={"inputs": "x"})
        health = client.get("/health").json()
    assert health["scaling"]["policy"] == "adaptive"
    window = health["scaling"]["experiments"]["fe"]
    assert window["policy"] == "adaptive" and window["reason"] == "learned" and "learned from 5 gaps" in window["detail"]
    assert health["configuration"]["HYBRID_POLICY"] == "adaptive"


def test_the_default_policy_stays_the_hybrid_one() -> None:
    settings = load_settings(env_file=None)
    policy = policy_from_settings(settings)
    assert settings.policy_name == "hybrid" and policy.name == "hybrid" and policy.learner is None
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, clock=clock)
    for t in (0.0, 100.0, 1000.0):  # recent activity, then an isolated request
        clock.now = t
        activity = tracker.record_request("e")
        assert policy.decide(activity) == hybrid_window(activity, HybridParams(900, 900, 300))
    assert policy.decide(None) == hybrid_window(None, HybridParams(900, 900, 300))

"""The adaptive keep-warm policy and the Shahrad et al. reference: what they learn, bounds, state."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

import core.adaptive as adaptive
from core.activity import ActivityTracker
from core.adaptive import AdaptiveParams, IdleHistogram, adaptive_window, shahrad_histogram_window
from core.api import build_inprocess_app
from core.policy import HybridParams, WindowReason, hybrid_window
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S, load_settings

PARAMS = AdaptiveParams()


def replay(gaps_s: list[float], params: AdaptiveParams = PARAMS):  # type: ignore[no-untyped-def]
    """Requests separated by the given gaps, through a real tracker; the decision after the last one."""
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, histograms=IdleHistogram)
    t = 0.0
    activity = tracker.record_request("e", at=t)
    for gap in gaps_s:
        t += gap
        activity = tracker.record_request("e", at=t)
    return activity, adaptive_window(activity, params)


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
    _, decision = replay(gaps, AdaptiveParams(kappa=kappa))
    assert MODAL_MIN_WINDOW_S <= decision.window_s <= MODAL_MAX_WINDOW_S
    assert decision.prewarm_after_s is None or 0 < decision.prewarm_after_s < 4 * 3600


def test_state_per_experiment_stays_bounded_and_decisions_cost_o1_amortised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = adaptive.best_plan

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(adaptive, "best_plan", counting)
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, histograms=IdleHistogram)
    histogram = None
    for i in range(1_000_000):
        activity = tracker.record_request("e", at=i * 7.0)
        adaptive_window(activity, PARAMS)
        histogram = activity.idle_histogram
    assert histogram is not None and histogram.total == 999_999
    assert histogram.state_bytes() <= 2048
    assert sys.getsizeof(histogram.counts) <= 2048
    assert calls["n"] <= 150  # recomputed after ≥ 1/8 growth: O(log n) times in all


def test_shahrad_policy_prewarms_a_regular_experiment_and_falls_back_when_not_representative() -> None:
    tracker = ActivityTracker(300, retention_s=30 * 24 * 3600, clock=lambda: 0.0, histograms=IdleHistogram)
    activity = None
    for i in range(30):
        activity = tracker.record_request("cron", at=i * 1800.0)  # every 30 minutes
    regular = shahrad_histogram_window(activity)
    assert regular.prewarm_after_s == 27 * 60  # 5th percentile (30 min) − 10 %
    assert regular.prewarm_after_s + regular.window_s == 35 * 60  # 99th percentile (31 min bin edge) + 10 %, rounded up
    hist = IdleHistogram()
    for gap in range(0, 240 * 60, 60):  # idle times spread evenly: coefficient of variation < 2
        hist.add(float(gap))
    spread = shahrad_histogram_window(activity.__class__(**{**activity.__dict__, "idle_histogram": hist}))  # type: ignore[union-attr]
    assert (spread.window_s, spread.prewarm_after_s, spread.reason) == (240 * 60, None, WindowReason.FIXED)


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
    assert settings.policy_name == "hybrid"
    assert adaptive.policy_from_settings(settings).func is hybrid_window  # type: ignore[attr-defined]
    assert adaptive.policy_from_settings(settings).keywords["params"] == HybridParams(900, 900, 300)  # type: ignore[attr-defined]


def test_targets_on_the_shared_2019_sample() -> None:
    """Issue targets, deterministic (a simulation, not a timing): the default adaptive policy stays
    within the balanced preset's idle budget with ≤ 1.3× the oracle's cold starts, and beats the best
    fixed window of no more idle time and the Shahrad et al. policy."""
    from core.policy_specs import SWEEP_MINUTES, parse_policy
    from core.simulator import simulate_minute_trace
    from core.traces import TraceFormat, read_minute_series
    from tests.test_simulator import SHARED_2019

    settings = load_settings(env_file=None)
    specs = ["adaptive", "histogram", "hybrid:balanced"] + [f"fixed:{m * 60}" for m in SWEEP_MINUTES]
    policies = {s: parse_policy(s, settings).decide for s in specs}
    results, oracle = simulate_minute_trace(read_minute_series(SHARED_2019, TraceFormat.AZURE_FUNCTIONS_2019), policies, 1440)
    ours, balanced, shahrad = results["adaptive"], results["hybrid:balanced"], results["histogram"]
    assert ours.idle_container_minutes <= balanced.idle_container_minutes
    assert ours.cold_starts <= 1.3 * oracle.cold_starts(balanced.idle_container_minutes)
    fixed = [r for name, r in results.items() if name.startswith("fixed:") and r.idle_container_minutes <= ours.idle_container_minutes]
    assert ours.cold_starts < min(r.cold_starts for r in fixed)
    assert ours.cold_starts < shahrad.cold_starts and ours.idle_container_minutes < shahrad.idle_container_minutes

"""The scaledown-window decision behind the Ray backend, as a pure function (no Ray needed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from backends.local_ray import scaling
from backends.local_ray.ingress import RayPredictor
from backends.local_ray.scaling import ReplicaReport, ScalingInputs, desired_replicas, reports_from_metrics
from core.keepwarm.decision import WindowDecision, WindowReason
from core.serving.errors import ModelUnavailable, UpstreamTimeout
from core.serving.registry import Experiment
from core.settings import load_settings

NOW = 10_000.0


def report(idle_real_s: float, window_s: float | None, last_request: float = 0.0, in_flight: int = 0) -> ReplicaReport:
    return ReplicaReport(last_busy=NOW - idle_real_s, in_flight=in_flight,
                         last_request=None if window_s is None else last_request, window_s=window_s)


def decide(reports: list[ReplicaReport], ongoing: float = 0, scale: float = 1, unreported: int = 0, max_replicas: int = 10):
    return desired_replicas(ScalingInputs(NOW, reports, ongoing, target_ongoing=2, time_scale=scale,
                                          max_replicas=max_replicas, unreported=unreported))


def test_warm_inside_the_window_and_zero_at_its_end() -> None:
    assert decide([report(899.9, 900)]).replicas == 1
    decision = decide([report(900.0, 900)])
    assert decision.replicas == 0 and "≥ window 900s" in decision.reason


def test_time_scale_multiplies_real_idle_time() -> None:
    assert decide([report(2.9, 900)], scale=300).replicas == 1  # 870 emulated seconds
    assert decide([report(3.0, 900)], scale=300).replicas == 0  # 900 emulated seconds


def test_the_latest_decision_is_the_window_in_force_for_every_replica() -> None:
    # replica B served the latest request with the long window: A is kept by it too, as on Modal
    a, b = report(1000, 900, last_request=1), report(10, 1800, last_request=2)
    assert decide([a, b]).replicas == 2
    a, b = report(1000, 1800, last_request=1), report(10, 900, last_request=2)
    assert decide([a, b]).replicas == 1


def test_in_flight_requests_keep_a_replica_whatever_the_window() -> None:
    assert decide([report(10_000, 2, in_flight=1)]).replicas == 1


def test_load_scales_up_to_the_maximum() -> None:
    assert decide([report(0, 900)], ongoing=7).replicas == 4  # ceil(7 / 2)
    assert decide([report(0, 900)], ongoing=100, max_replicas=3).replicas == 3


def test_starting_and_unserved_replicas_are_kept() -> None:
    assert decide([], unreported=1).replicas == 1
    assert decide([report(50, None)]).replicas == 1  # up, waiting for its first request
    assert decide([]).replicas == 0


def test_reports_from_serve_metrics_take_the_latest_point() -> None:
    point = lambda t, v: SimpleNamespace(timestamp=t, value=v)  # noqa: E731
    raw = {
        scaling.LAST_BUSY: {"r1": [point(1, 1.0), point(2, 5.0)]},
        scaling.LAST_REQUEST: {"r1": [point(2, 4.0)]},
        scaling.WINDOW: {"r1": [point(2, 900.0)]},
        scaling.IN_FLIGHT: {"r1": [point(1, 0.0), point(2, 0.0)]},
    }
    assert reports_from_metrics(raw, ["r1", "r2"]) == [ReplicaReport(5.0, 0, 4.0, 900.0)]


def test_a_metric_missing_from_the_latest_sample_is_not_taken_from_older_ones() -> None:
    """A replica that served a pre-warm decision, then a plain one, stops reporting PREWARM; its older
    points linger in Serve's look-back period but are no longer the replica's decision."""
    point = lambda t, v: SimpleNamespace(timestamp=t, value=v)  # noqa: E731
    raw = {
        scaling.LAST_BUSY: {"r1": [point(1, 1.0), point(2, 5.0)]},
        scaling.IN_FLIGHT: {"r1": [point(1, 0.0), point(2, 0.0)]},
        scaling.LAST_REQUEST: {"r1": [point(1, 1.0), point(2, 4.0)]},
        scaling.WINDOW: {"r1": [point(1, 300.0), point(2, 900.0)]},
        scaling.PREWARM: {"r1": [point(1, 600.0)]},
    }
    assert reports_from_metrics(raw, ["r1"]) == [ReplicaReport(5.0, 0, 4.0, 900.0, None)]


class _Call:
    """Stands for a DeploymentResponse: awaitable and cancellable."""

    def __init__(self, result: object = None, hang: bool = False):
        self.result, self.hang, self.cancelled = result, hang, False

    def __await__(self):
        if self.hang:
            yield from asyncio.sleep(3600).__await__()
        return self.result

    def cancel(self) -> None:
        self.cancelled = True


def predictor_with(call: _Call, timeout_s: float = 0.2) -> RayPredictor:
    handle = SimpleNamespace(predict=SimpleNamespace(remote=lambda *args: call))
    settings = load_settings(env_file=None, cold_start_timeout_s=timeout_s)
    return RayPredictor({"e": handle}, settings)


EXPERIMENT = Experiment(id="e", source="./x", task="feature-extraction")
DECISION = WindowDecision(900, WindowReason.ISOLATED, "")


def test_a_cold_start_longer_than_the_timeout_is_a_504_with_a_clear_message() -> None:
    call = _Call(hang=True)
    with pytest.raises(UpstreamTimeout, match="HYBRID_COLD_START_TIMEOUT_S"):
        asyncio.run(predictor_with(call).predict(EXPERIMENT, ["x"], None, DECISION))
    assert call.cancelled


def test_replica_errors_come_back_with_their_status() -> None:
    call = _Call({"error": {"type": "model_unavailable", "status": 503, "message": "e: sha256 mismatch"}})
    with pytest.raises(ModelUnavailable, match="sha256"):
        asyncio.run(predictor_with(call).predict(EXPERIMENT, ["x"], None, DECISION))


def prewarm_report(idle_real_s: float, prewarm_s: float, window_s: float) -> ReplicaReport:
    return ReplicaReport(last_busy=NOW - idle_real_s, in_flight=0, last_request=1.0, window_s=window_s, prewarm_s=prewarm_s)


def test_a_prewarm_scales_to_zero_then_brings_one_replica_back_before_the_request_is_due() -> None:
    # pre-warm after 600 s (emulated, scale 10 → 60 s real), keep 120 s; lead 5 s real
    def at(idle_real: float, running: bool) -> int:
        r = prewarm_report(idle_real, 600, 120)
        reports, remembered = ([r], None) if running else ([], r)
        return desired_replicas(ScalingInputs(NOW, reports, 0, 2, 10, 10, remembered=remembered, prewarm_lead_s=5)).replicas

    assert at(1, running=True) == 0  # idle: let it go at once
    assert at(30, running=False) == 0  # waiting for the pre-warm
    assert at(55.5, running=False) == 1  # 4.5 s before the request is due: bring one back
    assert at(65, running=True) == 1  # kept during the keep window (600..720 s emulated)
    assert at(72.5, running=True) == 0  # keep window over: scale to zero


def test_a_request_in_flight_is_never_cut_by_a_prewarm_plan() -> None:
    busy = ReplicaReport(last_busy=NOW, in_flight=1, last_request=1.0, window_s=120, prewarm_s=600)
    assert desired_replicas(ScalingInputs(NOW, [busy], 1, 2, 10, 10, prewarm_lead_s=5)).replicas == 1


def test_the_policy_keeps_its_memory_in_serves_policy_state() -> None:
    """The latest decision is remembered in the state Serve hands back to the policy, not in the
    policy object: a fresh policy object given that state decides the pre-warm the same way."""
    point = lambda v: [SimpleNamespace(timestamp=1, value=v)]  # noqa: E731
    raw = {scaling.LAST_BUSY: {"r1": point(NOW - 1)}, scaling.IN_FLIGHT: {"r1": point(0.0)},
           scaling.LAST_REQUEST: {"r1": point(NOW - 2)}, scaling.WINDOW: {"r1": point(120.0)},
           scaling.PREWARM: {"r1": point(600.0)}}

    def ctx(running: list[str], metrics: dict, state: dict, now: float) -> SimpleNamespace:
        return SimpleNamespace(current_time=now, running_replicas=running, raw_metrics=metrics, policy_state=state,
                               total_num_requests=0, capacity_adjusted_max_replicas=10, target_num_replicas=len(running))

    replicas, state = scaling.ScaledownWindowPolicy("e", time_scale=10, prewarm_lead_s=5)(ctx(["r1"], raw, {}, NOW))
    assert replicas == 0 and state[scaling.REMEMBERED]["prewarm_s"] == 600.0
    fresh = scaling.ScaledownWindowPolicy("e", time_scale=10, prewarm_lead_s=5)  # e.g. the controller restarted it
    assert fresh(ctx([], {}, state, NOW + 30))[0] == 0  # waiting for the pre-warm
    assert fresh(ctx([], {}, state, NOW + 56))[0] == 1  # 4 s before the request is due
    assert fresh(ctx([], {}, {}, NOW + 56))[0] == 0  # without the state it would know nothing

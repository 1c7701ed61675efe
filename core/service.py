"""The serving service: request → activity → policy → backend, plus the state `/health` reports.

Why this module exists: it is the one path every request takes, whatever the backend. For a valid
request of a registered experiment it records the arrival in the activity tracker, asks the policy
for the experiment's window, hands the decision to the backend's `WindowApplier`, runs the
prediction through the backend's `Predictor`, and records the completion. The HTTP layer (api.py)
only maps this to routes and status codes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from core.activity import ActivityTracker, Clock, ExperimentActivity
from core.adaptive import IdleHistogram, policy_from_settings
from core.auth import AuthMode, auth_mode
from core.engine import Prediction, Predictor
from core.errors import InvalidInput, PayloadTooLarge, UnknownExperiment
from core.events import EventLog
from core.metrics import ServerMetrics
from core.models import parse_parameters
from core.policy import WindowDecision
from core.registry import Experiment, Registry
from core.settings import Settings
from core.windows import RecordingApplier, WindowApplier

Policy = Callable[[ExperimentActivity | None], WindowDecision]


def retention_s(settings: Settings) -> float:
    """How long an idle experiment's activity is remembered: longer than any window can last, and —
    for the adaptive policy — the four hours its idle-gap histogram spans."""
    longest = settings.active_window_s + settings.activity_window
    return max(longest, 4 * 3600.0) if settings.policy_name == "adaptive" else longest


def histogram_factory(settings: Settings) -> Callable[[], IdleHistogram] | None:
    """Per-experiment idle-gap histograms, when the configured policy learns from them."""
    return IdleHistogram if settings.policy_name == "adaptive" else None


def emulated_clock(time_scale: float) -> Clock:
    """A monotonic clock running `time_scale` times faster: with it, core's policy sees emulated seconds."""
    if time_scale == 1:
        return time.monotonic
    return lambda: time.monotonic() * time_scale


class ServingService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        predictor: Predictor,
        applier: WindowApplier | None = None,
        tracker: ActivityTracker | None = None,
        policy: Policy | None = None,
        backend: str = "inprocess",
        mode: AuthMode | None = None,
        metrics: ServerMetrics | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.predictor = predictor
        self.applier = applier or RecordingApplier()
        self.policy: Policy = policy or policy_from_settings(settings)
        self.tracker = tracker or ActivityTracker(
            settings.activity_window,
            retention_s=retention_s(settings),
            clock=emulated_clock(settings.time_scale),
            histograms=histogram_factory(settings),
        )
        self.metrics = metrics or ServerMetrics()
        self.backend = backend
        self.mode = mode or auth_mode(settings)
        self.events = EventLog(settings.event_log)

    # --- the request path ------------------------------------------------------------------------
    def experiment(self, experiment_id: str) -> Experiment:
        experiment = self.registry.get(experiment_id)
        if experiment is None:
            raise UnknownExperiment(f"experiment {experiment_id!r} is not registered (GET /experiments lists them)")
        return experiment

    def validate(self, experiment_id: str, inputs: str | list[str], parameters: dict[str, Any] | None) -> tuple[Experiment, list[str], Any]:
        experiment = self.experiment(experiment_id)
        batch = [inputs] if isinstance(inputs, str) else list(inputs)
        if not batch:
            raise InvalidInput("inputs: must be a string or a non-empty list of strings")
        if len(batch) > self.settings.max_inputs:
            raise PayloadTooLarge(f"inputs: {len(batch)} inputs in one request; the limit is {self.settings.max_inputs} (HYBRID_MAX_INPUTS)")
        params = parse_parameters(experiment.task, parameters, self.settings.max_new_tokens)
        return experiment, batch, params

    async def predict(self, experiment_id: str, inputs: str | list[str], parameters: dict[str, Any] | None) -> tuple[Prediction, WindowDecision]:
        experiment, batch, params = self.validate(experiment_id, inputs, parameters)
        activity = self.tracker.record_request(experiment.id)
        decision = self.policy(activity)
        self.applier.apply(experiment.id, decision)
        self.metrics.window.labels(experiment.id).set(decision.window_s)
        self.events.write(experiment.id, "request", decision.window_s, decision.reason.value)
        try:
            prediction = await self.predictor.predict(experiment, batch, params)
        finally:
            self.tracker.record_completion(experiment.id)
        if prediction.cold_load:
            self.metrics.cold_loads.labels(experiment.id).inc()
            self.metrics.load_seconds.labels(experiment.id).observe(prediction.load_ms / 1000)
        return prediction, decision

    # --- state for /health, /experiments, /metrics ------------------------------------------------
    def windows(self) -> dict[str, dict[str, Any]]:
        """Each remembered experiment's current window decision, idle time and time left."""
        in_force = self.applier.in_force()
        out: dict[str, dict[str, Any]] = {}
        for activity in self.tracker.snapshot():
            decision = self.policy(activity)
            expires = decision.expires_at(activity)
            out[activity.experiment_id] = {
                "scaledown_window_s": decision.window_s,
                "policy": self.settings.policy_name,
                "reason": decision.reason.value,
                "detail": decision.detail,
                "prewarm_after_s": decision.prewarm_after_s,
                "idle_s": round(activity.idle_s, 3),
                "expires_in_s": None if expires is None else round(max(0.0, expires - activity.now), 3),
                "applied": in_force.get(activity.experiment_id),
            }
        return out

    def activity(self) -> dict[str, Any]:
        stats = self.tracker.stats()
        return {
            "total_requests": stats.total_requests,
            "total_completions": stats.total_completions,
            "in_flight": stats.in_flight,
            "tracked_experiments": stats.tracked_experiments,
            "forgotten_experiments": stats.forgotten_experiments,
            "activity_window_s": self.settings.activity_window,
            "experiments": {
                a.experiment_id: {
                    "requests_in_window": a.requests_in_window,
                    "total_requests": a.total_requests,
                    "in_flight": a.in_flight,
                    "last_request_age_s": round(a.now - a.last_request, 3),
                }
                for a in self.tracker.snapshot()
            },
        }

    async def health(self) -> dict[str, Any]:
        cached = await self.predictor.cached_models()
        self.metrics.cached_models.set(len(cached))
        models = await self.predictor.model_status()
        windows = self.windows()
        for experiment_id, window in windows.items():
            model = models.get(experiment_id, {})
            state = model.get("state", "cold")
            window.update(state=state, replicas=model.get("replicas", 1 if state == "warm" else 0),
                          last_cold_start=model.get("last_cold_start"))
        return {
            "status": "ok",
            "backend": self.backend,
            "authentication": {"mode": self.mode.value},
            "scaling": {
                "base_warm_time_s": self.settings.base_warm_time,
                "extension_time_s": self.settings.extension_time,
                "activity_window_s": self.settings.activity_window,
                "max_containers": self.settings.max_containers,
                "idle_window_s": self.settings.idle_window_s,
                "active_window_s": self.settings.active_window_s,
                "time_scale": self.settings.time_scale,
                "policy": self.settings.policy_name,
                "experiments": windows,
            },
            "activity": self.activity(),
            "cached_models": cached,
            "configuration": {k: (str(v) if v is not None and not isinstance(v, (int, float, str)) else v)
                              for k, v in self.settings.public_dict().items()},
        }

    async def experiments(self) -> list[dict[str, Any]]:
        status = await self.predictor.model_status()
        windows = self.windows()
        out = []
        for experiment in self.registry:
            model = status.get(experiment.id, {})
            window = windows.get(experiment.id)
            decision = self.policy(None) if window is None else None
            state = model.get("state", "cold")
            out.append({
                **experiment.describe(),
                "state": state,
                # in-process, this process is the experiment's one container once its model is loaded
                "replicas": model.get("replicas", 1 if state == "warm" else 0),
                "scaledown_window_s": window["scaledown_window_s"] if window else decision.window_s,  # type: ignore[union-attr]
                "window_reason": window["reason"] if window else decision.reason.value,  # type: ignore[union-attr]
                "idle_s": window["idle_s"] if window else None,
                "model": model,
            })
        return out

    async def render_metrics(self) -> bytes:
        self.metrics.cached_models.set(len(await self.predictor.cached_models()))
        await self.predictor.model_status()  # backends refresh their replica gauges here
        for experiment_id, window in self.windows().items():
            self.metrics.window.labels(experiment_id).set(window["scaledown_window_s"])
        return self.metrics.render()

    async def close(self) -> None:
        await self.predictor.close()

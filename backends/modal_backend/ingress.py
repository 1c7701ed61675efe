"""The HTTP ingress on Modal: core's FastAPI app, with predictions sent to per-experiment pools.

Why this module exists: the ingress is core's request path + `create_app` unchanged, plus three
Modal adapters whose network calls are injected (so the whole app runs offline in tests):
`ModalPredictor` calls the experiment's pool, `LiveWindowController` applies windows with
`update_autoscaler`, and `SharedActivityTracker` shares arrivals between ingress containers.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from fastapi import FastAPI

from backends.modal_backend.live_windows import LiveWindowController, UpdateFn
from backends.modal_backend.shared_activity import SharedActivityTracker
from core.http.app import create_app
from core.keepwarm.decision import WindowDecision
from core.keepwarm.policies import policy_from_settings, retention_s
from core.serving.prediction import Prediction
from core.serving.registry import Experiment, Registry
from core.serving.remote import answered_prediction, await_worker
from core.serving.request_path import RequestPath
from core.settings import Settings

CallModel = Callable[[str, list[str], Any], Awaitable[dict[str, Any]]]


class ModalPredictor:
    """Sends a prediction to `ExperimentModel(experiment_id=E)`; Modal starts a container if none is warm."""

    def __init__(self, call: CallModel, settings: Settings, windows: LiveWindowController, tracker: SharedActivityTracker):
        self._call = call
        self.settings = settings
        self.windows = windows
        self.tracker = tracker

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any, decision: WindowDecision) -> Prediction:
        request_at = time.time()
        call = self._call(experiment.id, inputs, params)
        result = await await_worker(call, experiment.id, self.settings.cold_start_timeout_s, "model container")
        return answered_prediction(result, request_at)

    async def model_status(self) -> dict[str, dict[str, Any]]:
        """Modal does not expose a pool's container count here: a pool is reported warm while the
        window in force has not run out since the experiment's last request, as Modal keeps it."""
        now = time.time()
        in_force = self.windows.in_force()
        out = {}
        for activity in self.tracker.snapshot():
            applied = in_force.get(activity.experiment_id)
            window = self.settings.base_warm_time if applied is None else applied.window_s
            warm = activity.idle_s < window
            out[activity.experiment_id] = {"state": "warm" if warm else "cold", "replicas": None,
                                           "window_in_force_s": window, "checked_at": now}
        return out

    async def cached_models(self) -> list[str]:
        return [e for e, s in (await self.model_status()).items() if s["state"] == "warm"]

    async def close(self) -> None:
        await self.windows.close()


def build_ingress_app(
    settings: Settings,
    registry: Registry,
    call_model: CallModel,
    update_autoscaler: UpdateFn,
    store_get: Callable[[str], Awaitable[Any]],
    store_put: Callable[[str, float], Awaitable[Any]],
    deployment: str,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    policy = policy_from_settings(settings)
    tracker = SharedActivityTracker(
        settings.activity_window, retention_s(settings, policy), store_get, store_put, clock=clock, learner=policy.learner,
    )
    windows = LiveWindowController(update_autoscaler, deployment, min_interval_s=settings.window_update_interval_s,
                                   prewarm_lead_s=settings.prewarm_lead_s, clock=clock)
    predictor = ModalPredictor(call_model, settings, windows, tracker)
    return create_app(RequestPath(settings, registry, predictor, windows, tracker=tracker), backend="modal")

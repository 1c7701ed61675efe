"""The HTTP ingress on Ray Serve: core's FastAPI app, with predictions forwarded to experiment replicas.

Why this module exists: the ingress is core's request path + `create_app` unchanged; only the
predictor is Ray-specific. `RayPredictor` calls the experiment's deployment handle with the window
decided for the request (the replicas report it to the autoscaling policy: no redeploy, no restart);
a cold experiment's request waits in the handle's queue while Serve starts a replica, up to
`HYBRID_COLD_START_TIMEOUT_S`. It keeps each experiment's last cold start and reads replica counts
from Serve's controller for /health, /experiments and /metrics.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from core.auth import AuthMode
from core.http.app import create_app
from core.keepwarm.decision import WindowDecision
from core.serving.errors import ModelUnavailable
from core.serving.prediction import Prediction
from core.serving.registry import Experiment, Registry
from core.serving.remote import answered_prediction, await_worker
from core.serving.request_path import RequestPath
from core.settings import Settings

APP_NAME = "hybrid-serve"
STATUS_TTL_S = 0.25


def deployment_name(experiment_id: str) -> str:
    return f"experiment-{experiment_id}"


class RayPredictor:
    def __init__(self, handles: dict[str, Any], settings: Settings):
        self.handles = handles
        self.settings = settings
        self.cold_starts: dict[str, dict[str, float]] = {}
        self.load_errors: dict[str, str] = {}  # the model failed to load in its replica, last we heard
        self._status: dict[str, dict[str, int]] = {}
        self._status_at = 0.0

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any, decision: WindowDecision) -> Prediction:
        request_at = time.time()
        call = self.handles[experiment.id].predict.remote(inputs, params, request_at, decision.window_s, decision.prewarm_after_s)
        try:
            result = await await_worker(call, experiment.id, self.settings.cold_start_timeout_s, "replica")
        except ModelUnavailable as exc:
            self.load_errors[experiment.id] = exc.message
            raise
        self.load_errors.pop(experiment.id, None)
        prediction = answered_prediction(result, request_at)
        if prediction.cold_start is not None and prediction.cold_start.first:
            self.cold_starts[experiment.id] = {**asdict(prediction.cold_start), "at": request_at}
        return prediction

    async def replica_states(self) -> dict[str, dict[str, int]]:
        """Replica counts by state per experiment, from Serve's controller (cached briefly)."""
        if time.monotonic() - self._status_at > STATUS_TTL_S:
            from ray import serve

            status = await asyncio.to_thread(serve.status)
            app = status.applications.get(APP_NAME)
            deployments = app.deployments if app else {}
            self._status = {
                experiment_id: {str(getattr(k, "value", k)): int(v) for k, v in deployments[deployment_name(experiment_id)].replica_states.items()}
                for experiment_id in self.handles if deployment_name(experiment_id) in deployments
            }
            self._status_at = time.monotonic()
        return self._status

    async def model_status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for experiment_id, states in (await self.replica_states()).items():
            running, starting, stopping = states.get("RUNNING", 0), states.get("STARTING", 0), states.get("STOPPING", 0)
            if running and stopping:
                state = "scaling down"
            elif running:
                state = "warm"
            elif starting:
                state = "starting"
            elif stopping:
                state = "scaling down"
            else:
                state = "cold"
            error = self.load_errors.get(experiment_id)
            out[experiment_id] = {"state": "failed" if error else state, "replicas": running, "replica_states": states,
                                  "last_cold_start": self.cold_starts.get(experiment_id), "last_error": error}
        return out

    async def cached_models(self) -> list[str]:
        return [e for e, states in (await self.replica_states()).items() if states.get("RUNNING", 0)]

    def begin_shutdown(self) -> None:
        return None  # the containers serve on; this ingress simply stops taking requests

    async def close(self) -> None:
        return None


class HybridIngress:
    """Serve ingress deployment: builds core's app at replica start (`__serve_build_asgi_app__`)."""

    def __init__(self, settings: dict[str, Any], mode: str, experiments: dict[str, dict[str, Any]], *handles: Any):
        self.settings = Settings.model_construct(**settings)
        self.mode = AuthMode(mode)
        registry = Registry({e: Experiment(**values) for e, values in experiments.items()})
        by_name = {h.deployment_name: h for h in handles}
        predictor = RayPredictor({e: by_name[deployment_name(e)] for e in experiments}, self.settings)
        self.path = RequestPath(self.settings, registry, predictor)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.path, backend="ray", mode=self.mode)

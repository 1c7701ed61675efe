"""The HTTP ingress on Ray Serve: core's FastAPI app, with predictions forwarded to experiment replicas.

Why this module exists: the ingress is core's `ServingService` + `create_app` unchanged; only two
small adapters are Ray-specific. `RayWindowApplier` makes each decision travel with the request to
the experiment's replicas (they report it to the autoscaling policy: no redeploy, no restart).
`RayPredictor` calls the experiment's deployment handle (a cold experiment's request waits in the
handle's queue while Serve starts a replica, up to `HYBRID_COLD_START_TIMEOUT_S`), turns replica
errors back into status codes, records cold starts split into replica start and model load, and
reads replica counts from Serve's controller for /health, /experiments and /metrics.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core.api import create_app
from core.auth import AuthMode
from core.engine import Prediction
from core.errors import await_worker
from core.events import EventLog
from core.metrics import ServerMetrics
from core.registry import Experiment, Registry
from core.service import ServingService
from core.settings import Settings
from core.windows import RecordingApplier

APP_NAME = "hybrid-serve"
STATUS_TTL_S = 0.25


def deployment_name(experiment_id: str) -> str:
    return f"experiment-{experiment_id}"


class RayWindowApplier(RecordingApplier):
    """Records each decision; the predictor sends the latest one with every request."""

    def window_for(self, experiment_id: str) -> float:
        return float(self.in_force().get(experiment_id, {}).get("window_s", -1))

    def prewarm_for(self, experiment_id: str) -> float:
        prewarm = self.in_force().get(experiment_id, {}).get("prewarm_after_s")
        return -1.0 if prewarm is None else float(prewarm)


class RayPredictor:
    def __init__(self, handles: dict[str, Any], applier: RayWindowApplier, settings: Settings,
                 metrics: ServerMetrics, events: EventLog):
        self.handles = handles
        self.applier = applier
        self.settings = settings
        self.metrics = metrics
        self.events = events
        self.cold_starts: dict[str, dict[str, float]] = {}
        self._status: dict[str, dict[str, int]] = {}
        self._status_at = 0.0

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any) -> Prediction:
        request_at = time.time()
        call = self.handles[experiment.id].predict.remote(
            inputs, params, self.applier.window_for(experiment.id), request_at, self.applier.prewarm_for(experiment.id)
        )
        result = await await_worker(call, experiment.id, self.settings.cold_start_timeout_s, "replica")
        prediction: Prediction = result["prediction"]
        cold = result["cold_start"]
        if cold and cold["init_started_at"] >= request_at - 0.5:  # the replica started for (around) this request
            replica_start_s = max(0.0, cold["init_started_at"] - request_at)
            total_s = max(0.0, cold["ready_at"] - request_at)
            record = {"replica_start_s": replica_start_s, "model_load_s": cold["model_load_s"], "total_s": total_s, "at": request_at}
            self.cold_starts[experiment.id] = record
            self.metrics.cold_starts.labels(experiment.id).inc()
            self.metrics.cold_start_seconds.labels(experiment.id, "replica_start").observe(replica_start_s)
            self.metrics.cold_start_seconds.labels(experiment.id, "model_load").observe(cold["model_load_s"])
            self.events.write(experiment.id, "cold_start", self.applier.window_for(experiment.id), None,
                              replica=prediction.replica, **{k: round(v, 4) for k, v in record.items() if k != "at"})
            return Prediction(prediction.outputs, True, total_s * 1000, prediction.queue_ms, prediction.inference_ms,
                              prediction.batch_inputs, prediction.replica)
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
            self.metrics.replicas.labels(experiment_id).set(running)
            out[experiment_id] = {"state": state, "replicas": running, "replica_states": states,
                                  "last_cold_start": self.cold_starts.get(experiment_id)}
        return out

    async def cached_models(self) -> list[str]:
        return [e for e, states in (await self.replica_states()).items() if states.get("RUNNING", 0)]

    async def close(self) -> None:
        return None


class HybridIngress:
    """Serve ingress deployment: builds core's app at replica start (`__serve_build_asgi_app__`)."""

    def __init__(self, settings: dict[str, Any], mode: str, experiments: dict[str, dict[str, Any]], *handles: Any):
        self.settings = Settings.model_construct(**settings)
        registry = Registry({e: Experiment(**values) for e, values in experiments.items()})
        by_name = {h.deployment_name: h for h in handles}
        metrics = ServerMetrics()
        applier = RayWindowApplier()
        events = EventLog(self.settings.event_log)
        predictor = RayPredictor({e: by_name[deployment_name(e)] for e in experiments}, applier, self.settings, metrics, events)
        self.service = ServingService(self.settings, registry, predictor, applier, backend="ray",
                                      mode=AuthMode(mode), metrics=metrics)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.service)

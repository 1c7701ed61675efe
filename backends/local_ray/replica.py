"""One Ray Serve replica of one experiment: a container in Modal's terms.

Why this module exists: a replica is what scales 0 → N → 0. Its constructor is the cold start
(process start, then the model load through core's engine); it serves predictions through the same
`InferenceEngine` as every backend; and it reports to the autoscaling policy when it was last busy
and which window was decided for the latest request it served (`record_autoscaling_stats`).
Errors come back as values so the ingress can answer with the right status code.
"""

from __future__ import annotations

import time
from typing import Any

from core.engine import InferenceEngine
from core.errors import ServeError, error_value
from core.registry import Experiment
from core.settings import Settings

from backends.local_ray import scaling


class ExperimentReplica:
    def __init__(self, experiment: dict[str, Any], settings: dict[str, Any]):
        self.init_started_at = time.time()
        from ray import serve

        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.experiment = Experiment(**experiment)
        self.engine = InferenceEngine(Settings.model_construct(**settings), replica=self.replica_id)
        self.load_error: str | None = None
        load_started = time.perf_counter()
        try:
            self.engine.cache.get(self.experiment)
        except ServeError as exc:  # the replica stays up; requests get 503 and retry the load
            self.load_error = exc.message
        self.model_load_s = time.perf_counter() - load_started
        self.ready_at = time.time()
        self._last_busy = self.ready_at
        self._last_request = 0.0
        self._window_s = -1.0
        self._prewarm_s = -1.0
        self._in_flight = 0
        self._served = 0

    async def predict(self, inputs: list[str], params: Any, window_s: float, request_at: float,
                      prewarm_s: float = -1.0) -> dict[str, Any]:
        """Run a prediction; `window_s` / `prewarm_s` are what core decided for this request (emulated s)."""
        self._in_flight += 1
        if request_at >= self._last_request:
            self._last_request, self._window_s, self._prewarm_s = request_at, float(window_s), float(prewarm_s)
        try:
            prediction = await self.engine.predict(self.experiment, inputs, params)
        except ServeError as exc:
            return error_value(exc)
        finally:
            self._in_flight -= 1
            self._last_busy = time.time()
        first = self._served == 0
        self._served += 1
        return {
            "prediction": prediction,
            "cold_start": {
                "init_started_at": self.init_started_at,
                "ready_at": self.ready_at,
                "model_load_s": self.model_load_s,
            } if first else None,
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {
            scaling.LAST_BUSY: time.time() if self._in_flight else self._last_busy,
            scaling.LAST_REQUEST: self._last_request,
            scaling.WINDOW: self._window_s,
            scaling.IN_FLIGHT: float(self._in_flight),
            scaling.PREWARM: self._prewarm_s,
        }

    def check_health(self) -> None:  # Serve's health check: a replica that is up is healthy
        return None

"""The container's end of a remote model (a Ray replica, a Modal container): `RemoteWorker`.

Why this module exists: both backends run an experiment's model in containers of their own, with the
same shape — load the model when the container starts (its cold start), serve predictions through
core's engine, report the cold start with the first answer, and return errors as values for the
ingress (core.serving.remote) to raise again. The backend's class only adds its platform's hooks.
"""

from __future__ import annotations

import time
from typing import Any

from core.serving.engine import InferenceEngine
from core.serving.errors import ServeError
from core.serving.registry import Experiment
from core.serving.remote import error_value
from core.settings import Settings


class RemoteWorker:
    """One container's model: loaded at start, served through the engine, errors as values."""

    def __init__(self, settings: Settings, experiment: Experiment, replica: str | None = None):
        self.started_at = time.time()
        self.experiment = experiment
        self.engine = InferenceEngine(settings, replica=replica)
        self.model_load_s = 0.0
        self.ready_at = self.started_at
        self._served = 0

    def load(self) -> None:
        """Load the model (the container's cold start). A failure leaves the container up: each
        request then retries the load and answers 503 with the reason while it fails."""
        started = time.perf_counter()
        try:
            self.engine.cache.get(self.experiment)
        except ServeError:
            pass
        self.model_load_s = time.perf_counter() - started
        self.ready_at = time.time()

    async def predict(self, inputs: list[str], params: Any) -> dict[str, Any]:
        """`{"prediction": …, "cold_start": {…} | None}` — the cold start only with the container's
        first answer — or `{"error": …}`."""
        try:
            prediction = await self.engine.predict(self.experiment, inputs, params)
        except ServeError as exc:
            return error_value(exc)
        first = self._served == 0
        self._served += 1
        cold_start = {"started_at": self.started_at, "ready_at": self.ready_at, "model_load_s": self.model_load_s}
        return {"prediction": prediction, "cold_start": cold_start if first else None}

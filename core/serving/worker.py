"""The container's end of a remote model (a Ray replica, a Modal container): `RemoteWorker`.

Why this module exists: both backends run an experiment's model in containers of their own, with the
same shape — load the model when the container starts (its cold start), serve predictions through
core's engine, tell each request that waited for the start so (with where the time went), and return
errors as values for the ingress (core.serving.remote) to raise again. With a memory snapshot the
load runs before the snapshot, on the CPU (a snapshot phase has no GPU), and `restored()` moves the
weights to the GPU once the container is restored. The backend's class only adds its platform's hooks.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

from core.serving.cache import ModelState
from core.serving.engine import InferenceEngine
from core.serving.errors import ServeError
from core.serving.models import LoadedModel, best_device, load_model
from core.serving.registry import Experiment
from core.serving.prediction import Prediction
from core.serving.remote import error_value
from core.serving.streaming import StreamItem
from core.settings import Settings


class RemoteWorker:
    """One container's model: loaded at start, served through the engine, errors as values."""

    def __init__(self, settings: Settings, experiment: Experiment, replica: str | None = None,
                 imports_s: float | None = None):
        self.started_at = time.time()
        #: How long the container took to import the model stack before this (None: not measured).
        self.imports_s = imports_s
        self.experiment = experiment
        self.device: str | None = None  # None: the best device when the model loads
        self.engine = InferenceEngine(settings, loader=self._load_model, replica=replica)
        self.model_load_s = 0.0
        self.ready_at = self.started_at
        self._served = 0

    def _load_model(self, experiment: Experiment) -> LoadedModel:
        return load_model(experiment, self.device)

    def load(self, device: str | None = None) -> None:
        """Load the model (the container's cold start) onto `device` (default: the best one). A failure
        leaves the container up: each request then retries the load and answers 503 with the reason."""
        self.device = device
        started = time.perf_counter()
        try:
            self.engine.cache.get(self.experiment)
        except ServeError:
            pass
        self.model_load_s = time.perf_counter() - started
        self.ready_at = time.time()

    @property
    def load_failed(self) -> bool:
        """The model is not loaded: its latest load failed (the next request tries again)."""
        return self.engine.cache.state(self.experiment.id).state == ModelState.FAILED

    def restored(self) -> None:
        """The container was restored from a memory snapshot: it starts now, and the weights loaded on
        the CPU before the snapshot move to this container's best device (its GPU)."""
        self.started_at = time.time()
        self.device = best_device()
        started = time.perf_counter()
        try:
            model = self.engine.cache.get(self.experiment).model
            if model.device != self.device:
                model.move_to(self.device)
        except ServeError:
            pass
        self.model_load_s = time.perf_counter() - started
        self.ready_at = time.time()

    async def close(self) -> None:
        """The container stops: requests still queued are refused (503), a pass already running finishes,
        the batchers stop and the model is released. Later requests are refused too."""
        await self.engine.close()
        self.engine.cache.forget(self.experiment.id)

    async def predict(self, inputs: list[str], params: Any, request_at: float | None = None) -> dict[str, Any]:
        """`{"prediction": …, "cold_start": {…} | None}` or `{"error": …}`. `cold_start` is set for a
        request that arrived (`request_at`, the ingress's clock) before this container was ready — it
        waited for the start — and marked `first` on the container's first answer."""
        try:
            prediction = await self.engine.predict(self.experiment, inputs, params)
        except ServeError as exc:
            return error_value(exc)
        return self._answer(prediction, request_at)

    async def stream(self, prompt: str, params: Any, request_at: float | None = None) -> AsyncIterator[dict[str, Any] | StreamItem]:
        """A streamed generation: first its start as `predict` answers (`{"prediction": …, "cold_start": …}`,
        the prediction without outputs) or `{"error": …}`, then its items; an error that ends it midway is
        its last item, as a value. Left early (the client hung up), the generation stops."""
        try:
            streaming = await self.engine.stream(self.experiment, prompt, params)
        except ServeError as exc:
            yield error_value(exc)
            return
        try:
            yield self._answer(streaming.start, request_at)
            async for item in streaming.items:
                yield item
        except ServeError as exc:
            yield error_value(exc)
        finally:
            await streaming.items.aclose()  # type: ignore[attr-defined]

    def _answer(self, prediction: Prediction, request_at: float | None) -> dict[str, Any]:
        first = self._served == 0
        self._served += 1
        waited = first if request_at is None else request_at < self.ready_at
        cold_start = {"started_at": self.started_at, "ready_at": self.ready_at, "model_load_s": self.model_load_s,
                      "first": first, "imports_s": self.imports_s}
        return {"prediction": prediction, "cold_start": cold_start if waited else None,
                "precision": self.engine.cache.state(self.experiment.id).precision()}

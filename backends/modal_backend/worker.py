"""What runs inside one experiment's Modal container, as plain Python.

Why this module exists: the Modal class in `inference_api.py` only adds decorators; the work —
resolve the experiment, load its model once at container start, serve predictions through core's
engine, hand errors back as values — lives here, so it is tested offline exactly as it runs.
"""

from __future__ import annotations

from typing import Any

from core.engine import InferenceEngine
from core.errors import ServeError, UnknownExperiment, error_value
from core.registry import Registry
from core.settings import Settings


class ExperimentWorker:
    def __init__(self, settings: Settings, registry: Registry, experiment_id: str):
        experiment = registry.get(experiment_id)
        if experiment is None:
            raise UnknownExperiment(f"experiment {experiment_id!r} is not registered")
        self.experiment = experiment
        self.engine = InferenceEngine(settings)
        self.load_error: str | None = None

    def load(self) -> None:
        """Load the model (at container start: `@modal.enter`); a failure is kept and retried per request."""
        try:
            self.engine.cache.get(self.experiment)
            self.load_error = None
        except ServeError as exc:
            self.load_error = exc.message

    async def predict(self, inputs: list[str], params: Any) -> dict[str, Any]:
        try:
            prediction = await self.engine.predict(self.experiment, inputs, params)
        except ServeError as exc:
            return error_value(exc)
        return {"prediction": prediction}

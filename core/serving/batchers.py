"""One micro-batcher per loaded model, and letting it go with its model.

Why this module exists: a batcher holds its model (its forward function), so a model the cache
evicted, or the registry changed or removed, lives on until its batcher goes. `Batchers` gives each
loaded model its batcher (a fresh one after a reload) and drains the ones whose model is gone —
requests already waiting in them still run — so the cache's limits are the memory's.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Iterable

from core.serving.batching import MicroBatcher
from core.serving.models import LoadedModel
from core.settings import Settings


class Batchers:
    def __init__(self, settings: Settings, executor: Executor):
        self.settings = settings
        self.executor = executor
        self._batchers: dict[str, tuple[LoadedModel, MicroBatcher]] = {}

    def of(self, experiment_id: str, model: LoadedModel) -> MicroBatcher:
        """The batcher of the experiment's loaded `model` (a reload after eviction gets a fresh one)."""
        current = self._batchers.get(experiment_id)
        if current is None or current[0] is not model:
            if current is not None:
                current[1].drain()
            batcher = MicroBatcher(model.predict, max_batch_size=self.settings.max_batch_size,
                                   max_wait_s=self.settings.batch_wait_ms / 1000, executor=self.executor,
                                   max_queue=self.settings.max_queue)
            current = self._batchers[experiment_id] = (model, batcher)
        return current[1]

    def keep_only(self, cached: Iterable[str]) -> None:
        """Drain the batchers of models the cache no longer holds."""
        kept = set(cached)
        self.drop(*[e for e in self._batchers if e not in kept])

    def drop(self, *experiment_ids: str) -> None:
        """Drain these experiments' batchers: their models go once what waits in them has run."""
        for experiment_id in experiment_ids:
            current = self._batchers.pop(experiment_id, None)
            if current is not None:
                current[1].drain()

    def close(self) -> None:
        """Refuse what waits in every batcher (503); passes already running finish."""
        for _, batcher in self._batchers.values():
            batcher.close()
        self._batchers.clear()

"""The models a process keeps loaded, least recently used first, within a count and a memory budget.

Why this module exists: a loaded model holds hundreds of megabytes; a process keeps as many as its
limits allow (`HYBRID_CACHE_MAX_MODELS`, `HYBRID_CACHE_MAX_MEMORY_MB`) and lets the least recently
used go first. Which models stay is this one policy, apart from how they are loaded (the cache's
single flight) and what is remembered of them (their load records); the cache's lock guards it.
"""

from __future__ import annotations

from collections import OrderedDict

from core.serving.models import LoadedModel


class LoadedModels:
    """Loaded models by experiment id, least recently used first (not thread-safe: its cache holds the lock)."""

    def __init__(self, max_models: int = 4, max_bytes: int = 0):
        self.max_models = max_models
        #: 0: no memory budget, only the count.
        self.max_bytes = max_bytes
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def __contains__(self, experiment_id: str) -> bool:
        return experiment_id in self._models

    def ids(self) -> list[str]:
        """Loaded experiments, least recently used first."""
        return list(self._models)

    def use(self, experiment_id: str) -> LoadedModel | None:
        """The experiment's model, now the most recently used (None: not loaded)."""
        model = self._models.get(experiment_id)
        if model is not None:
            self._models.move_to_end(experiment_id)
        return model

    def remove(self, experiment_id: str) -> None:
        del self._models[experiment_id]

    def add(self, experiment_id: str, model: LoadedModel) -> list[str]:
        """Keep a newly loaded model; the experiments evicted to stay within the limits, oldest first.
        The new model stays even when it alone exceeds the budget: it is in use."""
        self._models[experiment_id] = model
        evicted: list[str] = []
        while self._over_budget():
            victim = next((e for e in self._models if e != experiment_id), None)
            if victim is None:
                break
            del self._models[victim]
            evicted.append(victim)
        return evicted

    def _over_budget(self) -> bool:
        if len(self._models) > self.max_models:
            return True
        return bool(self.max_bytes) and sum(m.size_bytes for m in self._models.values()) > self.max_bytes

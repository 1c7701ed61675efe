"""Model cache: load on first use, load once under concurrency, evict least-recently-used.

Why this module exists: a cold load (read weights, build the model) costs seconds, so a process
keeps loaded models for later requests — bounded by a count and a memory budget, evicting the least
recently used. Many requests arriving together for a cold experiment share one load ("single
flight"). A failed load is reported to every waiter and forgotten, so a later request retries.
Cold and warm load times are recorded per experiment, and each model's life — loading, loaded,
evicted — in the cost ledger (here the loaded model is the experiment's one container). Which models stay loaded is
`LoadedModels`' policy (core.serving.loaded_models), what is remembered of each load `LoadRecords`'
(core.serving.load_records); the cache ties them together under one lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from core.serving.errors import ModelUnavailable
from core.serving.model_lives import ModelLives
from core.serving.load_records import LoadRecord, LoadRecords
from core.serving.loaded_models import LoadedModels
from core.serving.model_status import ModelState  # noqa: F401  (where workers and tests look for it)
from core.serving.models import LoadedModel
from core.serving.registry import Experiment


@dataclass(frozen=True)
class CacheHit:
    model: LoadedModel
    cold: bool  # this request waited for a load (its own or a concurrent one)
    load_s: float
    loaded: bool = False  # ... its own: the one request a load is counted for


#: What `_begin` gives with a warm hit in place of a load to wait for.
_DONE: Future[LoadedModel] = Future()


class ModelCache:
    """Thread-safe LRU of loaded models with single-flight loading."""

    def __init__(self, loader: Callable[[Experiment], LoadedModel], max_models: int = 4, max_bytes: int = 0):
        self._loader = loader
        #: Each model's life as a container's in the cost ledger: its load a cold start, its eviction a stop.
        self.lives = ModelLives()
        self._clock = time.perf_counter
        self._lock = threading.Lock()
        #: What stays loaded (LRU, within the limits) and what is remembered of every load.
        self.models = LoadedModels(max_models, max_bytes)
        self._records = LoadRecords()
        #: Loads under way; `forget` removes an entry, so a load started before it is served, not kept.
        self._loading: dict[str, Future[LoadedModel]] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")

    # --- lookups -------------------------------------------------------------------------------
    def get(self, experiment: Experiment) -> CacheHit:
        """Blocking: the loaded model, loading it in this thread if nobody else is."""
        start = self._clock()
        hit, future, owner = self._begin(experiment, start)
        if hit is not None:
            return hit
        if owner:
            self._load(experiment, future)
        return CacheHit(future.result(), cold=True, load_s=self._clock() - start, loaded=owner)

    async def aget(self, experiment: Experiment) -> CacheHit:
        """Non-blocking for the event loop: loads run on the cache's loader threads."""
        start = self._clock()
        hit, future, owner = self._begin(experiment, start)
        if hit is not None:
            return hit
        if owner:
            self._executor.submit(self._load, experiment, future)
        loaded = await asyncio.wrap_future(future)
        return CacheHit(loaded, cold=True, load_s=self._clock() - start, loaded=owner)

    def state(self, experiment_id: str) -> LoadRecord:
        with self._lock:
            return self._records.copy(experiment_id)

    def cached_ids(self) -> list[str]:
        """Loaded experiments, least recently used first."""
        with self._lock:
            return self.models.ids()

    def known_ids(self) -> list[str]:
        """Every experiment the cache has tried to load, in first-seen order."""
        with self._lock:
            return self._records.ids()

    def forget(self, experiment_id: str) -> None:
        """Drop the experiment's model (its definition changed, or it was removed). A load under way
        still answers the requests waiting for it, but its model is not kept."""
        with self._lock:
            self._loading.pop(experiment_id, None)
            if experiment_id in self.models:
                self._evict(experiment_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.lives.close()

    # --- internals -----------------------------------------------------------------------------
    def _begin(self, experiment: Experiment, start: float) -> tuple[CacheHit | None, Future[LoadedModel], bool]:
        """(the warm hit, a done future, False) | (None, the load to wait for, whether this caller runs it)."""
        with self._lock:
            model = self.models.use(experiment.id)
            # A new definition: the old model goes (the registry's own object is the same one: no field compared).
            if model is not None and model.experiment is not experiment and model.experiment != experiment:
                self._evict(experiment.id)
                model = None
            if model is not None:
                elapsed = self._clock() - start
                self._records.warm_hit(experiment.id, elapsed)
                return CacheHit(model, cold=False, load_s=elapsed), _DONE, False
            future = self._loading.get(experiment.id)
            if future is not None:
                return None, future, False
            future = self._loading[experiment.id] = Future()
            self._records.loading(experiment.id)
            self.lives.loading(future, experiment.id)
            return None, future, True

    def _load(self, experiment: Experiment, future: Future[LoadedModel]) -> None:
        start = self._clock()
        try:
            model = self._loader(experiment)
        except Exception as exc:
            error = exc if isinstance(exc, ModelUnavailable) else ModelUnavailable(
                f"{experiment.id}: model load failed: {type(exc).__name__}: {exc}"
            )
            with self._lock:
                if self._loading.get(experiment.id) is future:
                    del self._loading[experiment.id]
                self._records.failed(experiment.id, error.message)
                self.lives.ended(future)
            future.set_exception(error)
            return
        elapsed = self._clock() - start
        with self._lock:
            if self._loading.get(experiment.id) is not future:  # forgotten meanwhile: serve it, don't keep it
                self.lives.loaded(future, experiment.id, kept=False)
                future.set_result(model)
                return
            del self._loading[experiment.id]
            self._records.loaded(experiment.id, elapsed, model.size_bytes, model.precision.in_use, model.precision.note)
            self.lives.loaded(future, experiment.id)
            for victim in self.models.add(experiment.id, model):
                self._records.evicted(victim)
                self.lives.ended(victim)
        future.set_result(model)

    def _evict(self, experiment_id: str) -> None:
        self.models.remove(experiment_id)
        self._records.evicted(experiment_id)
        self.lives.ended(experiment_id)

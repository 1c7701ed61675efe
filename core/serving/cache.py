"""Model cache: load on first use, load once under concurrency, evict least-recently-used.

Why this module exists: a cold load (read weights, build the model) costs seconds, so a process
keeps loaded models for later requests — bounded by a count and a memory budget, evicting the least
recently used. Many requests arriving together for a cold experiment share one load ("single
flight"). A failed load is reported to every waiter and forgotten, so a later request retries.
Cold and warm load times are recorded per experiment.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from core.serving.errors import ModelUnavailable
from core.serving.model_status import ModelState
from core.serving.models import LoadedModel
from core.serving.registry import Experiment


@dataclass
class LoadRecord:
    """Per-experiment load history."""

    state: ModelState = ModelState.COLD
    cold_loads: int = 0
    last_cold_load_s: float | None = None
    warm_hits: int = 0
    last_warm_lookup_s: float | None = None
    evictions: int = 0
    last_error: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class CacheHit:
    model: LoadedModel
    cold: bool  # this request waited for a load (its own or a concurrent one)
    load_s: float


class ModelCache:
    """Thread-safe LRU of loaded models with single-flight loading."""

    def __init__(
        self,
        loader: Callable[[Experiment], LoadedModel],
        max_models: int = 4,
        max_bytes: int = 0,
    ):
        self._loader = loader
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._clock = time.perf_counter
        self._lock = threading.Lock()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        #: Loads under way; `forget` removes an entry, so a load started before it is served, not kept.
        self._loading: dict[str, Future[LoadedModel]] = {}
        self._records: dict[str, LoadRecord] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")

    # --- lookups -------------------------------------------------------------------------------
    def get(self, experiment: Experiment) -> CacheHit:
        """Blocking: the loaded model, loading it in this thread if nobody else is."""
        start = self._clock()
        model, future, owner = self._begin(experiment)
        if model is not None:
            return self._warm(experiment.id, model, start)
        assert future is not None
        if owner:
            self._load(experiment, future)
        return CacheHit(future.result(), cold=True, load_s=self._clock() - start)

    async def aget(self, experiment: Experiment) -> CacheHit:
        """Non-blocking for the event loop: loads run on the cache's loader threads."""
        start = self._clock()
        model, future, owner = self._begin(experiment)
        if model is not None:
            return self._warm(experiment.id, model, start)
        assert future is not None
        if owner:
            self._executor.submit(self._load, experiment, future)
        loaded = await asyncio.wrap_future(future)
        return CacheHit(loaded, cold=True, load_s=self._clock() - start)

    def state(self, experiment_id: str) -> LoadRecord:
        with self._lock:
            return LoadRecord(**vars(self._records.get(experiment_id, LoadRecord())))

    def cached_ids(self) -> list[str]:
        """Loaded experiments, least recently used first."""
        with self._lock:
            return list(self._models)

    def known_ids(self) -> list[str]:
        """Every experiment the cache has tried to load, in first-seen order."""
        with self._lock:
            return list(self._records)

    def forget(self, experiment_id: str) -> None:
        """Drop the experiment's model (its definition changed, or it was removed). A load under way
        still answers the requests waiting for it, but its model is not kept."""
        with self._lock:
            self._loading.pop(experiment_id, None)
            if experiment_id in self._models:
                self._evict(experiment_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- internals -----------------------------------------------------------------------------
    def _record(self, experiment_id: str) -> LoadRecord:
        return self._records.setdefault(experiment_id, LoadRecord())

    def _begin(self, experiment: Experiment) -> tuple[LoadedModel | None, Future[LoadedModel] | None, bool]:
        """(the warm model, None, False) | (None, the load to wait for, whether this caller runs it)."""
        with self._lock:
            model = self._models.get(experiment.id)
            if model is not None and model.experiment != experiment:  # a new definition: the old model goes
                self._evict(experiment.id)
                model = None
            if model is not None:
                self._models.move_to_end(experiment.id)
                return model, None, False
            future = self._loading.get(experiment.id)
            if future is not None:
                return None, future, False
            future = self._loading[experiment.id] = Future()
            self._record(experiment.id).state = ModelState.LOADING
            return None, future, True

    def _warm(self, experiment_id: str, model: LoadedModel, start: float) -> CacheHit:
        elapsed = self._clock() - start
        with self._lock:
            record = self._record(experiment_id)
            record.warm_hits += 1
            record.last_warm_lookup_s = elapsed
        return CacheHit(model, cold=False, load_s=elapsed)

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
                record = self._record(experiment.id)
                record.state, record.last_error = ModelState.FAILED, error.message
            future.set_exception(error)
            return
        elapsed = self._clock() - start
        with self._lock:
            if self._loading.get(experiment.id) is not future:  # forgotten meanwhile: serve it, don't keep it
                future.set_result(model)
                return
            del self._loading[experiment.id]
            self._models[experiment.id] = model
            record = self._record(experiment.id)
            record.state, record.last_error = ModelState.WARM, None
            record.cold_loads += 1
            record.last_cold_load_s = elapsed
            record.size_bytes = model.size_bytes
            self._evict_over_budget(keep=experiment.id)
        future.set_result(model)

    def _evict_over_budget(self, keep: str) -> None:
        def over() -> bool:
            if len(self._models) > self.max_models:
                return True
            return bool(self.max_bytes) and sum(m.size_bytes for m in self._models.values()) > self.max_bytes

        while over():
            victim = next((e for e in self._models if e != keep), None)
            if victim is None:  # the newest model alone exceeds the budget: keep it, it is in use
                break
            self._evict(victim)

    def _evict(self, experiment_id: str) -> None:
        del self._models[experiment_id]
        record = self._record(experiment_id)
        record.state = ModelState.COLD
        record.evictions += 1

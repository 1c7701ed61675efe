"""The inference engine: registered models, loaded through the cache, run through micro-batchers.

Why this module exists: it is the part of the model server that actually runs models, the same code
whether it lives in this process (in-process backend), in a Ray Serve replica, or in a Modal
container. It implements the `Predictor` interface the request path calls. It checks each request's
inputs against the loaded model before they join a batch, turns a model's failure into a 500 for
that request alone, keeps the wait per experiment bounded (503 + Retry-After beyond), and releases
an evicted model's batcher so that the cache's limits are the memory's.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable, Collection

from core.keepwarm.ledger import UsageRecord
from core.serving.batchers import Batchers
from core.serving.batching import BatcherClosed, QueueFull
from core.serving.cache import CacheHit, ModelCache
from core.serving.inference_thread import InferenceThread
from core.serving.errors import InvalidInput, ModelFailed, Overloaded, ServeError
from core.serving.models import LoadedModel, load_model
from core.serving.live_registry import RegistryChange
from core.serving.model_status import LoadHistory, ModelState, ModelStatus
from core.serving.prediction import Prediction, StreamingPrediction
from core.serving.registry import Experiment, Registry
from core.serving.streaming import OpenStreams, start_generation
from core.settings import Settings


class InferenceEngine:
    """Loads models on demand (LRU cache, single flight) and micro-batches requests per experiment."""

    def __init__(
        self,
        settings: Settings,
        loader: Callable[[Experiment], LoadedModel] = load_model,
        replica: str | None = None,
    ):
        self.settings = settings
        self.replica = replica
        self.cache = ModelCache(
            loader, max_models=settings.cache_max_models, max_bytes=settings.cache_max_memory_mb * 1024 * 1024
        )
        # One inference thread: forward passes of different experiments do not fight over the cores.
        self._executor = InferenceThread()
        self.batchers = Batchers(settings, self._executor)
        self._closing = False
        #: Streams open per experiment, bounded as a batcher's queue.
        self.streams = OpenStreams(settings.max_queue)

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        """A removed or changed experiment's model is let go now: requests already queued for it
        finish on it, the next request of a changed one loads the new model."""
        for experiment_id in change.removed + change.changed:
            self.cache.forget(experiment_id)
            self.batchers.drop(experiment_id)

    async def _model(self, experiment: Experiment, inputs: list[str], params: Any) -> CacheHit:
        """The experiment's model, loaded if it must be, once the inputs were checked against it."""
        if self._closing:
            raise Overloaded("the server is shutting down; retry on another instance", retry_after_s=1)
        hit = await self.cache.aget(experiment)
        if hit.cold:  # a load may have evicted another model
            self.batchers.keep_only(self.cache.cached_ids())  # an evicted model's batcher goes with it
        hit.model.check(inputs, params)  # an input the model cannot take fails here, before it joins a batch
        return hit

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any) -> Prediction:
        """Run the model here (this process is the one container, kept while it runs)."""
        hit = await self._model(experiment, inputs, params)
        try:
            with self.cache.lives.serving(experiment.id):  # busy time in the cost ledger
                result = await self.batchers.of(experiment.id, hit.model).submit(inputs, params, key=params)
        except QueueFull:
            raise Overloaded(f"{experiment.id}: {self.settings.max_queue} requests already wait (HYBRID_MAX_QUEUE); "
                             "retry shortly", retry_after_s=1) from None
        except BatcherClosed:
            raise Overloaded(f"{experiment.id}: the server is shutting down or the model was unloaded; retry",
                             retry_after_s=1) from None
        except ServeError:
            raise
        except Exception as exc:
            raise ModelFailed(f"{experiment.id}: the model failed on this request's inputs "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
        return Prediction(
            outputs=result.outputs,
            cold_load=hit.cold,
            load_ms=hit.load_s * 1000,
            queue_ms=result.queue_s * 1000,
            inference_ms=result.inference_s * 1000,
            batch_inputs=result.batch_inputs,
            replica=self.replica, loaded=hit.loaded,
        )

    async def stream(self, experiment: Experiment, prompt: str, params: Any) -> StreamingPrediction:
        """Generate from `prompt` on the inference thread, token by token, once the thread takes it up; it
        holds the thread until its last token, or until its reader leaves (it stops at its next token)."""
        hit = await self._model(experiment, [prompt], params)
        generate = hit.model.stream
        if generate is None:
            raise InvalidInput(f"stream: {experiment.id} is a {experiment.task.value} experiment; only text generation streams")
        held = ExitStack()  # until the stream ends: an open stream of the experiment, its busy time
        held.callback(self.streams.take(experiment.id))
        held.enter_context(self.cache.lives.serving(experiment.id))
        try:
            queue_s, items = await start_generation(self._executor, generate, prompt, params, held.close)
        except BaseException:
            held.close()
            raise
        start = Prediction(outputs=[], cold_load=hit.cold, load_ms=hit.load_s * 1000, inference_ms=0.0,
                           queue_ms=queue_s * 1000, batch_inputs=1, replica=self.replica, loaded=hit.loaded)
        return StreamingPrediction(start, items)

    async def model_status(self) -> dict[str, ModelStatus]:
        """Every experiment this process tried to load; this process is its one container, so it runs
        one replica while its model is loaded."""
        out: dict[str, ModelStatus] = {}
        for experiment_id in self.cache.known_ids():
            record = self.cache.state(experiment_id)
            loads = LoadHistory(
                cold_loads=record.cold_loads,
                last_cold_load_ms=None if record.last_cold_load_s is None else record.last_cold_load_s * 1000,
                warm_hits=record.warm_hits,
                last_warm_lookup_ms=None if record.last_warm_lookup_s is None else record.last_warm_lookup_s * 1000,
                evictions=record.evictions,
                size_bytes=record.size_bytes,
            )
            out[experiment_id] = ModelStatus(record.state, replicas=1 if record.state is ModelState.WARM else 0,
                                             last_error=record.last_error, loads=loads, **record.precision())
        return out

    async def cached_models(self) -> list[str]:
        return self.cache.cached_ids()

    async def usage(self, only: Collection[str] | None = None) -> dict[str, UsageRecord]:
        """Each loaded (or once loaded) model's container-seconds (or only those of `only`): this process
        is its one container."""
        return self.cache.lives.ledger.records(only=only)

    def begin_shutdown(self) -> None:
        """Refuse new requests and the queued ones (503); passes already running finish."""
        self._closing = True
        self.batchers.close()

    async def close(self) -> None:
        self.begin_shutdown()
        self.cache.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


"""The HTTP ingress on Modal: core's FastAPI app, with predictions sent to per-experiment pools.

Why this module exists: the ingress is core's request path + `create_app` unchanged, serving the
registry in the deployment's shared state (registry_store.py, followed live: an experiment added a
moment ago serves on its first request), with three Modal adapters whose network calls are injected
(so the whole app runs offline in tests):

- `ModalPredictor` calls the pool of the experiment's current definition (pools.py: a changed
  experiment is a new pool, requests in flight finish on the old one) with the request's arrival
  time (so a container that starts for it reports the cold start), and answers a clear 503 +
  `Retry-After` before Modal's web limit would turn a long cold start into a bare redirect — and
  refuses (503) a request that would start a container beyond the deployment's cap (live_containers.py);
- `PublishingTracker` is core's activity tracker that also publishes this container's arrivals, in
  batches, under its own key of the shared state, each batch naming the pool it was served by, then
  pokes the reconciler (arrival_publisher.py) — which alone applies windows
  (backends.modal_backend.reconciler), to that pool; it starts from the experiments' durable activity;
- `AppliedWindows` shows in `/health` what the reconciler applied (read from the shared state).

It imports no model stack: the ingress image carries no torch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Collection

from pathlib import Path

from fastapi import FastAPI

from backends.modal_backend.arrival_publisher import ArrivalPublisher
from backends.modal_backend.container_lives import UsageReader
from backends.modal_backend.deploy_config import MODAL_WEB_WAIT_S, REMOTE_ROOT, deployed_mode
from backends.modal_backend.live_containers import LiveContainers, experiment_of, per_experiment
from backends.modal_backend.pools import PoolKey, pool_key
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.registry_sync import SeedingRegistrySource
from backends.modal_backend.state_store import APPLIED, StateStore, activity_key
from backends.modal_backend.stream_calls import CancelCall, StreamCalls
from core.http.app import create_app
from core.keepwarm.activity import ActivityTracker, ExperimentActivity
from core.keepwarm.container_budget import ContainerBudget
from core.keepwarm.controller import AppliedWindow, WindowController
from core.keepwarm.histogram import Learner
from core.keepwarm.ledger import UsageRecord
from core.keepwarm.policies import policy_from_settings, retention_s
from core.keepwarm.shared_activity import DurableActivity
from core.serving.errors import BackendUnavailable, ModelUnavailable
from core.serving.live_registry import LiveRegistry, RegistryChange, moves
from core.serving.model_status import ModelState, ModelStatus, PoolWindow
from core.serving.prediction import Prediction, Predictor, StreamingPrediction
from core.serving.registry import Experiment, Registry
from core.serving.remote import answered_prediction, await_worker, error_value, streamed_prediction
from core.serving.request_path import RequestPath
from backends.modal_backend.calls_apart import CallsApart
from backends.modal_backend.settings import ModalSettings

log = logging.getLogger("hybrid_serve.modal.ingress")

#: `call(pool, inputs, params, request_at)`: ExperimentModel(experiment_id=E, definition=D).predict.remote.aio.
CallModel = Callable[[PoolKey, list[str], Any, float], Awaitable[dict[str, Any]]]
#: `stream(pool, prompt, params, request_at)`: ExperimentModel(...).stream.remote_gen.aio — a streamed generation.
CallStream = Callable[[PoolKey, str, Any, float], AsyncIterator[Any]]
#: The concrete model a moving source (an MLflow alias) resolves to now; None for sources that never move.
IdentityFn = Callable[[Experiment], Awaitable["str | None"]]


async def _fixed(_: Experiment) -> str | None:
    return None


async def _no_stream(pool: PoolKey, prompt: str, params: Any, request_at: float) -> AsyncIterator[Any]:
    """An ingress built without a stream call (a test's): every stream is refused, as a value."""
    yield error_value(BackendUnavailable(f"{pool.experiment_id}: this ingress does not stream", retry_after_s=None))


#: The registry's stamp before anything was read: the first refresh always reads.
_UNREAD = "unread"
#: A cold start still waiting when Modal's web limit nears: come back after this long.
RETRY_AFTER_S = 30.0


class ModalPredictor(Predictor):
    """Sends a prediction to the pool of the experiment's current definition; Modal starts a container
    if none is warm."""

    def __init__(self, call: CallModel, settings: ModalSettings, applied: "AppliedWindows", tracker: "PublishingTracker",
                 identity: IdentityFn = _fixed, usage: UsageReader | None = None, live: LiveContainers | None = None,
                 stream: "CallStream | None" = None, cancel: CancelCall | None = None):
        self._call = call
        self._stream = stream or _no_stream
        #: A stream left before its end cancels its call in the container (stream_calls.py).
        self._streams = StreamCalls(cancel)
        #: The containers running across the deployment, and the admission of cold starts within its cap.
        self.live = live
        self._usage = usage  # the model containers' published lives (container_lives.py)
        self.settings = settings
        self.applied = applied
        self.tracker = tracker
        self._identity = identity
        #: Model calls whose clients were told to retry, still going on for their containers' sake.
        self._apart = CallsApart()
        #: The precision each experiment's model runs in, as its container last said (this ingress's view).
        self._precisions: dict[str, dict[str, str | None]] = {}

    async def _admitted(self, experiment: Experiment) -> tuple[PoolKey, float, BackendUnavailable | None]:
        """The experiment's pool once a request may go there (beyond MODAL_MAX_CONTAINERS: 503), the wait
        its answer is given, and the error for a cold start that outlasts Modal's web limit (None: the
        cold-start timeout comes first)."""
        pool = pool_key(experiment, await self._identity(experiment))
        self.tracker.served_by(pool)  # named even when refused: the reconciler drains a moved alias's old pool
        if self.live is not None:  # a request that would start a container beyond MODAL_MAX_CONTAINERS: 503
            await self.live.admit(pool)
        wait_s = min(self.settings.cold_start_timeout_s, MODAL_WEB_WAIT_S)
        web_limit = BackendUnavailable(
            f"{experiment.id}: the model container is still starting after {wait_s:g}s (Modal ends a web request "
            f"at 150s); it keeps starting: retry in {RETRY_AFTER_S:g}s", retry_after_s=RETRY_AFTER_S,
        ) if wait_s < self.settings.cold_start_timeout_s else None
        return pool, wait_s, web_limit

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any) -> Prediction:
        request_at = time.time()
        pool, wait_s, web_limit = await self._admitted(experiment)
        call = asyncio.ensure_future(self._call(pool, inputs, params, request_at))
        if web_limit is None:
            result = await await_worker(call, experiment.id, wait_s, "model container")
        else:  # past the web limit the input stays with its container, which keeps starting for the retry
            try:
                result = await await_worker(asyncio.shield(call), experiment.id, wait_s, "model container",
                                            timeout_error=web_limit)
            except BackendUnavailable:
                self._apart.keep(call, self.settings.cold_start_timeout_s - wait_s)
                raise
            except asyncio.CancelledError:  # the client hung up: its input goes too
                call.cancel()
                raise
        return self._answered(experiment, answered_prediction(result, request_at))

    def _answered(self, experiment: Experiment, prediction: Prediction) -> Prediction:
        if prediction.precision is not None:
            self._precisions[experiment.id] = prediction.precision
        return prediction

    async def stream(self, experiment: Experiment, prompt: str, params: Any) -> StreamingPrediction:
        """A streamed generation from the experiment's pool (`ExperimentModel.stream`, a generator method); a
        cold start past Modal's web limit answers 503 + Retry-After (the container keeps starting)."""
        request_at = time.time()
        pool, wait_s, web_limit = await self._admitted(experiment)
        items = self._streams.followed(self._stream(pool, prompt, params, request_at))
        streaming = await streamed_prediction(items, experiment.id, wait_s, "model container", request_at,
                                              timeout_error=web_limit)
        self._answered(experiment, streaming.start)
        return streaming

    async def model_status(self) -> dict[str, ModelStatus]:
        """A pool is reported warm while the window the reconciler applied has not run out since the
        experiment's last request (or while a pre-warm pins a container); its containers are those
        beating now (live_containers.py)."""
        await self.applied.refresh()
        now = time.time()
        in_force = self.applied.in_force()
        containers = None if self.live is None else per_experiment(await self.live.running())
        out = {}
        for activity in self.tracker.snapshot():
            applied = in_force.get(activity.experiment_id)
            window = self.settings.base_warm_time if applied is None else applied.window_s
            pinned = applied is not None and bool(applied.min_containers)
            warm = pinned or activity.idle_s < window
            pool = self.tracker.pool_of(activity.experiment_id)
            replicas = None if containers is None else containers.get(activity.experiment_id, 0)
            out[activity.experiment_id] = ModelStatus(ModelState.WARM if warm else ModelState.COLD, replicas=replicas,
                                                      pool=PoolWindow(window, now, pool.version if pool else None),
                                                      **self._precisions.get(activity.experiment_id, {}))
        return out

    async def cached_models(self) -> list[str]:
        return [e for e, s in (await self.model_status()).items() if s.state is ModelState.WARM]

    async def usage(self, only: Collection[str] | None = None) -> dict[str, UsageRecord] | None:
        return None if self._usage is None else await self._usage.usage()  # read for all, cached 5 s

    def begin_shutdown(self) -> None:
        return None  # the containers serve on; this ingress simply stops taking requests

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        """Nothing to drop here: the next request of a changed experiment names its new pool (the
        reconciler drains the old one); a removed one is no longer served."""
        for experiment_id in change.removed + change.changed:
            self._precisions.pop(experiment_id, None)
        for experiment_id in change.removed:
            self.tracker.forget_pool(experiment_id)

    async def close(self) -> None:
        """The ingress stops: calls still going on apart from their requests are cancelled (their inputs
        go; the containers they started stay, as Modal keeps them for their windows), and the streams
        left meanwhile have their calls cancelled."""
        await self._apart.cancel_all()
        await self._streams.settle()


class AppliedWindows:
    """What the reconciler — Modal's window controller — applied, for `/health`: windows are applied
    there, from the arrivals this container publishes, never here; `in_force` is what it last applied
    (refreshed from the shared state at most every `ttl_s`)."""

    def __init__(self, store: StateStore, ttl_s: float = 2.0):
        self._store = store
        self._ttl_s = ttl_s
        self._in_force: dict[str, AppliedWindow] = {}
        self._read_at = float("-inf")

    def in_force(self) -> dict[str, AppliedWindow]:
        return dict(self._in_force)

    async def refresh(self) -> None:
        if time.monotonic() - self._read_at < self._ttl_s:
            return
        try:
            applied = await self._store.get(APPLIED) or {}
        except Exception as exc:  # shared state unreachable: show the last known state
            log.warning("reading the applied windows failed: %s: %s", type(exc).__name__, exc)
            return
        fields = set(AppliedWindow.__dataclass_fields__)
        self._in_force = {e: AppliedWindow(**{k: v for k, v in values.items() if k in fields})
                          for e, values in applied.items()}
        self._read_at = time.monotonic()


class PublishingTracker(ActivityTracker):
    """Core's tracker that publishes this container's arrivals (never on the request's path: an
    `ArrivalPublisher` writes them every `flush_s` under this container's own key, then pokes the
    reconciler) and takes in the experiments' durable activity the first time it sees them."""

    def __init__(self, activity_window_s: float, retention: float, store: StateStore,
                 poke: Callable[[], Awaitable[Any]], learner: Learner | None = None, flush_s: float = 2.0,
                 container: str | None = None, clock: Callable[[], float] = time.time):
        super().__init__(activity_window_s, retention_s=retention, clock=clock, learner=learner)
        self._store = store
        self._seen: set[str] = set()
        self._pools: dict[str, PoolKey] = {}
        self._publisher = ArrivalPublisher(store, poke, container or os.environ.get("MODAL_TASK_ID") or uuid.uuid4().hex,
                                           flush_s, self.pool_of, clock,
                                           learner.per_container if learner is not None else 1)

    @property
    def container(self) -> str:
        """This container's name: its key of the shared state."""
        return self._publisher.container

    def served_by(self, pool: PoolKey) -> None:
        """The pool this experiment's requests go to now: published with its arrivals."""
        self._pools[pool.experiment_id] = pool

    def pool_of(self, experiment_id: str) -> PoolKey | None:
        return self._pools.get(experiment_id)

    def forget_pool(self, experiment_id: str) -> None:
        self._pools.pop(experiment_id, None)

    def in_flight(self, experiment_id: str) -> int:
        """The experiment's requests under way at this ingress (recorded, not completed yet)."""
        with self._lock:
            state = self._experiments.get(experiment_id)
            return 0 if state is None else state.in_flight

    def record_request(self, experiment_id: str, at: float | None = None) -> ExperimentActivity:
        activity = super().record_request(experiment_id, at)
        self._publisher.arrived(experiment_id, activity.last_request)
        if experiment_id not in self._seen:
            self._seen.add(experiment_id)
            self._publisher.schedule(self._take_in(experiment_id))
        self._publisher.schedule(None)
        return activity

    def record_completion(self, experiment_id: str, at: float | None = None) -> None:
        super().record_completion(experiment_id, at)
        self._publisher.finished(experiment_id, at)
        # Published within `flush_s` too: the idle clock starts here, and a request that outlasted the
        # flush of its arrival (an alias resolved under load) names its pool only now.
        self._publisher.schedule(None)

    def record_cold_start(self, experiment_id: str, seconds: float) -> None:
        super().record_cold_start(experiment_id, seconds)
        self._publisher.cold_started(experiment_id, seconds)
        self._publisher.schedule(None)

    async def _take_in(self, experiment_id: str) -> None:
        try:
            record = await self._store.get(activity_key(experiment_id))
        except Exception as exc:
            log.warning("reading %s's durable activity failed: %s: %s", experiment_id, type(exc).__name__, exc)
            return
        if record is not None:
            self.absorb(DurableActivity.from_dict(record))

    async def flush(self) -> None:
        """Publish the batches gathered since the last flush, then poke the reconciler."""
        await self._publisher.flush()


def build_ingress_app(
    settings: ModalSettings,
    call_model: CallModel,
    store: StateStore,
    poke: Callable[[], Awaitable[Any]],
    flush_s: float = 2.0,
    base_dir: Path | None = None,
    seed: tuple[Registry, str] | None = None,
    stream_model: CallStream | None = None,
    cancel_stream: CancelCall | None = None,
) -> FastAPI:
    """The ingress app, serving the registry in `store` (read when the app starts, then followed).
    `base_dir`: where model directories shipped with the deploy lie (default: beside the container's
    registry file); `seed`: the deploy's registry and deployment id, seeded into `store` before the
    first read unless that deployment was seeded already (registry_sync.py); `cancel_stream`: cancels
    a streamed generation's function call by its id (stream_calls.py)."""
    if base_dir is None:
        base_dir = settings.registry_path.parent if settings.registry_path else Path(REMOTE_ROOT)
    source = DictRegistrySource(store, base_dir) if seed is None else SeedingRegistrySource(store, base_dir, *seed)
    registry = LiveRegistry(source, Registry({}), stamp=_UNREAD,
                            poll_s=settings.registry_poll_s, identity_poll_s=settings.mlflow_poll_s)

    async def identity(experiment: Experiment) -> str | None:
        """A moving source's concrete model: as last resolved, resolved now on its first request."""
        if not moves(experiment):
            return None
        if registry.identity(experiment.id) is None:
            await registry.check_identities([experiment.id])
        known = registry.identity(experiment.id)
        if known is None:
            reason = registry.status.identity_errors.get(experiment.id, "not resolved")
            raise ModelUnavailable(f"{experiment.id}: {reason}")
        return known

    policy = policy_from_settings(settings)
    tracker = PublishingTracker(settings.activity_window, retention_s(settings, policy), store, poke,
                                learner=policy.learner, flush_s=flush_s)
    applied = AppliedWindows(store)

    def demand(pool: str) -> int:  # the containers a pool's requests under way here need
        return -(-tracker.in_flight(experiment_of(pool)) // settings.modal_concurrent_inputs)

    live = LiveContainers(store, ContainerBudget.of(settings), starting_s=settings.cold_start_timeout_s,
                          grants_s=3 * settings.reconcile_interval_s, container=tracker.container, demand=demand)
    predictor = ModalPredictor(call_model, settings, applied, tracker, identity, UsageReader(store), live, stream_model,
                               cancel_stream)

    async def in_force() -> dict[str, AppliedWindow]:
        await applied.refresh()
        return applied.in_force()

    controller = WindowController.for_settings(settings, tracker, policy)
    return create_app(RequestPath(settings, registry, predictor, controller, applied=in_force), backend="modal",
                      mode=deployed_mode())  # the deploy's mode: this container never holds the tokens

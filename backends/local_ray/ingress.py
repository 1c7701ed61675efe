"""The HTTP ingress on Ray Serve: core's FastAPI app, with predictions forwarded to experiment replicas.

Why this module exists: the ingress is core's request path + `create_app` unchanged; only the
predictor and the activity tracker are Ray-specific. The tracker publishes each experiment's activity
to the GCS (activity_sink.py), where the experiment's scaling policy — the window controller on Ray —
reads it; `RayPredictor` forwards a request once its arrival is published: it deploys an experiment's
pool on its first request (deployer.py) and calls its deployment handle (handles.py); a cold
experiment's request waits in the handle's queue while Serve starts a replica, up to
`HYBRID_COLD_START_TIMEOUT_S`. It follows the registry through the keeper actor (registry changes swap
or delete pools), keeps each experiment's last cold start, and reads replica counts in the background
(replica_watch.py) for admission, /health, /experiments and /metrics.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Collection

from backends.local_ray.activity_sink import PublishedActivity
from backends.local_ray.admission import Admission
from backends.local_ray.activity_store import ActivityStore
from backends.local_ray.usage_store import UsageStore
from backends.local_ray.cold_starts import ColdStarts
from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.handles import Handles
from backends.local_ray.idle_pools import IdlePools
from backends.local_ray.in_flight import InFlight, Ticket
from backends.local_ray.registry_keeper import NAMESPACE, KeeperSource, keeper_name
from backends.local_ray.replica_calls import ReplicaCalls
from backends.local_ray.replica_slots import ReplicaSlots, StartingBoard
from backends.local_ray.replica_watch import ReplicaStates, ReplicaWatch, model_status, serve_replica_states
from backends.local_ray.schedule_store import ScheduleStore
from backends.local_ray.settings import RaySettings
from backends.local_ray.warm_schedules import WarmSchedules
from core.auth import AuthMode
from core.http.app import create_app
from core.keepwarm.controller import PoolPlan, WindowController
from core.keepwarm.ledger import UsageRecord
from core.keepwarm.policies import policy_from_settings
from core.serving.live_registry import LiveRegistry, RegistryChange
from core.serving.model_status import ModelStatus
from core.serving.prediction import Prediction, Predictor, StreamingPrediction
from core.serving.registry import Experiment, Registry
from core.serving.remote import answered_prediction
from core.serving.request_path import RequestPath

APP_NAME = "hybrid-serve"


async def _nothing_to_publish(experiment_id: str) -> None:
    return None


class RayPredictor(Predictor):
    """Forwards a request to its experiment's pool (after its arrival is published), answering for the
    pool's replicas on /health; the jobs around it — start slots, replica counts, handles, idle
    pools, requests in flight — are its collaborators."""

    def __init__(self, settings: RaySettings, app_name: str, deployer: PoolDeployer,
                 read_states: Callable[[str], ReplicaStates] = serve_replica_states,
                 handles: Handles | None = None, identity: Callable[[str], str | None] = lambda _: None,
                 publish: Callable[[str], Awaitable[None]] = _nothing_to_publish,
                 store: ActivityStore | None = None, plans: Callable[[], dict[str, PoolPlan]] = dict):
        self.settings, self.deployer = settings, deployer
        #: The model a moving source (an MLflow alias) resolved to, by experiment (the live registry's).
        self.identity = identity
        #: Publishes the experiment's activity for its scaling policy (before its request goes on).
        self.publish = publish
        self.store = store
        #: Each pool's cost ledger record, as its scaling policy publishes it (replica_lives.py).
        self.usage_store = UsageStore(app_name)
        self.handles = handles or Handles(app_name)
        self.replicas = ReplicaWatch(app_name, read_states, seen=deployer.seen)
        #: Pools at zero with nothing planned (the window controller's `plans`) go after HYBRID_IDLE_POOL_TTL_S.
        self.idle_pools = IdlePools(settings.idle_pool_ttl_s, deployer, self.handles, plans=plans)
        self.replicas.followers += [self.handles.close_idle, self.idle_pools.park]
        self.cold_starts: dict[str, dict[str, float]] = {}
        self.load_errors: dict[str, str] = {}  # the model failed to load in its replica, last we heard
        self.precisions: dict[str, dict[str, str | None]] = {}  # the precision its replicas' model runs in
        #: Cold starts under way at once, across experiments (HYBRID_MAX_COLD_STARTS).
        self.starts = ColdStarts(settings.max_cold_starts)
        #: The deployment's replica slots (MODAL_MAX_CONTAINERS): a cold experiment waits for none.
        self.slots = ReplicaSlots(settings.max_replicas or settings.max_containers, StartingBoard(app_name))
        #: Requests on their way to a replica: a retirement or a stop ends their wait.
        self.in_flight = InFlight()
        #: The calls to a pool's replicas, each holding the pool's handle while it runs.
        self.calls = ReplicaCalls(self.handles, self.idle_pools, self.load_errors)
        #: What a request goes through before a replica may take it (a slot, a turn, its pool deployed).
        self.admission = Admission(settings.cold_start_timeout_s, publish, self.replicas, self.slots, self.starts,
                                   deployer, identity)

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any) -> Prediction:
        """The replica's answer; a retirement of the experiment (404) or a stop (503) ends the wait for
        one at once (in_flight.py)."""
        return await self.in_flight.run(experiment.id, lambda ticket: self._predict(experiment, inputs, params, ticket))

    async def stream(self, experiment: Experiment, prompt: str, params: Any) -> StreamingPrediction:
        """A streamed generation from the experiment's pool (`RemoteWorker.stream` in a replica), admitted
        as a prediction is; the handle stays in use until the stream ends."""
        return await self.in_flight.run(experiment.id, lambda ticket: self.admission.run(
            experiment, lambda request_at, left_s: self._open_stream(experiment, prompt, params, request_at, left_s, ticket)))

    async def _predict(self, experiment: Experiment, inputs: list[str], params: Any, ticket: Ticket) -> Prediction:
        return await self.admission.run(experiment, lambda request_at, left_s: self._call(
            experiment, inputs, params, request_at, left_s, ticket))

    def _answered(self, experiment: Experiment, prediction: Prediction, request_at: float) -> Prediction:
        """A replica answered: the experiment's pool runs, and a cold start it reported is its last."""
        self.load_errors.pop(experiment.id, None)
        self.replicas.running(experiment.id)
        if prediction.precision is not None:
            self.precisions[experiment.id] = prediction.precision
        if prediction.cold_start is not None and prediction.cold_start.first:
            self.cold_starts[experiment.id] = {**asdict(prediction.cold_start), "at": request_at}
        return prediction

    async def _call(self, experiment: Experiment, inputs: list[str], params: Any, request_at: float,
                    timeout_s: float, ticket: Ticket | None = None) -> Prediction:
        result = await self.calls.predict(experiment.id, inputs, params, request_at, timeout_s, ticket)
        return self._answered(experiment, answered_prediction(result, request_at), request_at)

    async def _open_stream(self, experiment: Experiment, prompt: str, params: Any, request_at: float,
                           timeout_s: float, ticket: Ticket) -> StreamingPrediction:
        streaming = await self.calls.stream(experiment.id, prompt, params, request_at, timeout_s, ticket)
        self._answered(experiment, streaming.start, request_at)
        return streaming

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        """A removed experiment's pool is deleted (and its published activity), a changed one's
        redeployed with the new model (requests in flight finish on the old replicas); an added one
        waits for its first request."""
        for experiment_id in change.removed:
            self.in_flight.retire(experiment_id)
            self.deployer.retire(experiment_id)
            await self.handles.drop(experiment_id)
            self.cold_starts.pop(experiment_id, None)
            self.precisions.pop(experiment_id, None)
            self.load_errors.pop(experiment_id, None)
            if self.store is not None:
                await asyncio.to_thread(self.store.clear, experiment_id)
        for experiment_id in change.changed:
            experiment = registry.get(experiment_id)
            if experiment is not None:
                self.load_errors.pop(experiment_id, None)
                self.precisions.pop(experiment_id, None)
                self.deployer.swap(experiment, self.identity(experiment_id))

    async def model_status(self) -> dict[str, ModelStatus]:
        deployed = await self.replicas.current()
        parked: ReplicaStates = {e: {} for e in [*self.cold_starts, *self.load_errors] if e not in deployed}
        return {e: replace(model_status(states, self.cold_starts.get(e), self.load_errors.get(e)), **self.precisions.get(e, {}))
                for e, states in {**deployed, **parked}.items()}

    async def cached_models(self) -> list[str]:
        return [e for e, states in (await self.replicas.current()).items() if states.get("RUNNING", 0)]

    async def usage(self, only: Collection[str] | None = None) -> dict[str, UsageRecord]:
        """Each pool's container-seconds, as its scaling policy last published them (every few seconds)."""
        return await asyncio.to_thread(self.usage_store.read_recent)

    def begin_shutdown(self) -> None:
        """New requests and those waiting for a replica get 503 now; those replicas run finish (`drain`)."""
        self.in_flight.stop_taking()

    async def drain(self, timeout_s: float) -> int:
        """After `begin_shutdown`: `timeout_s` for the requests replicas run, then 503; how many were cut short."""
        return await self.in_flight.drain(timeout_s)

    async def close(self) -> None:
        self.replicas.close()
        await self.handles.close()
        self.deployer.close()  # no more pool changes


class HybridIngress:
    """Serve ingress deployment: builds core's app at replica start (`__serve_build_asgi_app__`). The
    registry comes from the keeper actor (read when the app starts, then polled); the experiments'
    activity from the GCS (what an ingress before this one published)."""

    def __init__(self, settings: RaySettings, mode: str, app_name: str):
        import ray

        self.settings = settings
        self.mode = AuthMode(mode)
        keeper = ray.get_actor(keeper_name(app_name), namespace=NAMESPACE)
        # Over HTTP a source is never a local path (refused before it gets here): no base directory needed.
        registry = LiveRegistry(KeeperSource(keeper, Path("/")), Registry({}), stamp=None,
                                poll_s=self.settings.registry_poll_s, identity_poll_s=self.settings.mlflow_poll_s)

        async def for_replicas(experiment: Experiment) -> Experiment:
            return await keeper.for_replicas.remote(experiment)

        store, policy, handles = ActivityStore(app_name), policy_from_settings(self.settings), \
            Handles(app_name, self.settings.handle_idle_s)
        tracker = PublishedActivity(self.settings, policy, store, at_pool=handles.in_flight)
        handles.changed = tracker.publisher.soon  # the requests at a pool size it: its policy reads them
        tracker.take_in_published()
        controller = WindowController.for_settings(self.settings, tracker, policy)
        deployer = PoolDeployer(self.settings, app_name, for_replicas)
        self.predictor = RayPredictor(self.settings, app_name, deployer, identity=registry.identity, handles=handles,
                                      publish=tracker.published, store=store, plans=controller.plans)
        self.path = RequestPath(self.settings, registry, self.predictor, controller=controller)
        #: Each experiment's warm schedule published for its pool's policy; a parked pool it asks containers of, deployed.
        self.schedules = WarmSchedules(ScheduleStore(app_name), deployer, controller.plans, registry.identity)
        registry.subscribe(self.schedules.registry_changed)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.path, backend="ray", mode=self.mode)

    def begin_shutdown(self) -> None:
        """The server stops (the driver calls this through a handle): new requests and those still
        waiting for a replica get 503 now."""
        self.path.begin_shutdown()

    async def drain(self, timeout_s: float) -> int:
        """Then: the requests replicas run get `timeout_s` to finish, the rest 503; how many were cut short."""
        return await self.predictor.drain(timeout_s)

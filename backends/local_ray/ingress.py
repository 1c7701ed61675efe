"""The HTTP ingress on Ray Serve: core's FastAPI app, with predictions forwarded to experiment replicas.

Why this module exists: the ingress is core's request path + `create_app` unchanged; only the
predictor is Ray-specific. `RayPredictor` deploys an experiment's pool on its first request
(deployer.py), calls its deployment handle with the window decided for the request (the replicas
report it to the autoscaling policy: no redeploy, no restart); a cold experiment's request waits in
the handle's queue while Serve starts a replica, up to `HYBRID_COLD_START_TIMEOUT_S`. It follows the
registry through the keeper actor (registry changes swap or delete pools), keeps each experiment's
last cold start and reads replica counts from Serve's controller for /health, /experiments and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, Callable

from pathlib import Path

from backends.local_ray.cold_starts import ColdStarts, NoStartSlot
from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.in_flight import InFlight, Ticket
from backends.local_ray.pool import deployment_name, pool_app_name
from backends.local_ray.registry_keeper import NAMESPACE, KeeperSource, keeper_name
from core.auth import AuthMode
from core.http.app import create_app
from core.keepwarm.controller import PoolPlan, unused_plan
from core.keepwarm.policies import policy_from_settings
from core.serving.errors import ModelUnavailable, Overloaded
from core.serving.live_registry import LiveRegistry, RegistryChange
from core.serving.model_status import ModelState, ModelStatus
from core.serving.prediction import Prediction
from core.serving.registry import Experiment, Registry
from core.serving.remote import answered_prediction, await_worker
from core.serving.request_path import RequestPath
from core.serving.scrub import scrub
from backends.local_ray.settings import RaySettings

log = logging.getLogger("hybrid_serve.ray.ingress")

APP_NAME = "hybrid-serve"
#: The ingress reads replica counts from Serve's controller in the background this often; requests,
#: /health, /experiments and /metrics read what it last saw (never a controller call on their path).
STATUS_INTERVAL_S = 1.0
#: A cold experiment refused for want of replica slots may come back after this long.
RETRY_AFTER_FULL_S = 10.0


def serve_replica_states(app_name: str) -> dict[str, dict[str, int]]:
    """Replica counts by state of every deployed pool of the application, from Serve's controller
    (blocking). Serve's raw instance details, not `serve.status()`: the latter rebuilds (and
    cloudpickles) every deployment's configuration on each call, five times the cost — a third of
    the ingress's CPU under load."""
    from ray.serve.context import _get_global_client

    prefix = pool_app_name(app_name, "")
    out: dict[str, dict[str, int]] = {}
    for name, app in (_get_global_client().get_serve_details().get("applications") or {}).items():
        if not name.startswith(prefix) or str(getattr(app.get("status"), "value", app.get("status"))) == "DELETING":
            continue  # another app's, or one going (an ingress restarted mid-deletion must not adopt it)
        experiment_id = name[len(prefix):]
        deployment = (app.get("deployments") or {}).get(deployment_name(experiment_id)) or {}
        counts: dict[str, int] = {}
        for replica in deployment.get("replicas", []):
            state = str(getattr(replica.get("state"), "value", replica.get("state")))
            counts[state] = counts.get(state, 0) + 1
        out[experiment_id] = counts
    return out


async def _answer(call: Any, ticket: Ticket | None) -> Any:
    """A deployment handle call's answer; `ticket` learns when Serve has given the call to a running
    replica (the end of any cold start). Cancelled, the call is cancelled too."""
    try:
        await call._fetch_future_result_async()  # Serve's assignment: no public way to await it alone
        if ticket is not None:
            ticket.take()
        return await call
    except asyncio.CancelledError:
        call.cancel()
        raise


class Handles:
    """Deployment handles, opened on an experiment's first request and closed once its pool has been
    at zero for `idle_s`: every open handle pushes its load to Serve's controller five times a
    second, so the control plane's cost follows the experiments in use, not those ever touched."""

    def __init__(self, app_name: str, idle_s: float = 30.0, open_handle: Callable[[str, str], Any] | None = None):
        self.app_name = app_name
        self.idle_s = idle_s
        self._open = open_handle or self._serve_handle
        self._handles: dict[str, Any] = {}
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}

    @staticmethod
    def _serve_handle(experiment_id: str, app_name: str) -> Any:
        from ray import serve

        return serve.get_deployment_handle(deployment_name(experiment_id), pool_app_name(app_name, experiment_id),
                                           _check_exists=False, _record_telemetry=False)

    def acquire(self, experiment_id: str) -> Any:
        handle = self._handles.get(experiment_id)
        if handle is None:
            handle = self._handles[experiment_id] = self._open(experiment_id, self.app_name)
        self._in_flight[experiment_id] = self._in_flight.get(experiment_id, 0) + 1
        return handle

    def idle(self, experiment_id: str) -> bool:
        """No request of the experiment is on its way to a replica through this ingress."""
        return not self._in_flight.get(experiment_id)

    def release(self, experiment_id: str) -> None:
        self._in_flight[experiment_id] -= 1
        self._last_used[experiment_id] = time.monotonic()

    def open_ids(self) -> list[str]:
        return list(self._handles)

    async def close_idle(self, at_zero: set[str]) -> None:
        now = time.monotonic()
        for experiment_id in [e for e in self._handles if e in at_zero and self.idle(e)
                              and now - self._last_used.get(e, now) >= self.idle_s]:
            await self._handles.pop(experiment_id).shutdown_async()

    async def drop(self, experiment_id: str) -> None:
        """The experiment's pool goes (retired): its handle with it."""
        handle = self._handles.pop(experiment_id, None)
        if handle is not None:
            await handle.shutdown_async()

    async def close(self) -> None:
        for handle in self._handles.values():
            await handle.shutdown_async()
        self._handles.clear()


class RayPredictor:
    def __init__(self, settings: RaySettings, app_name: str, deployer: PoolDeployer,
                 read_states: Callable[[str], dict[str, dict[str, int]]] = serve_replica_states,
                 handles: Handles | None = None, identity: Callable[[str], str | None] = lambda _: None):
        self.handles = handles or Handles(app_name)
        self.settings = settings
        self.app_name = app_name
        self.deployer = deployer
        #: The model a moving source (an MLflow alias) resolved to, by experiment (the live registry's).
        self.identity = identity
        self._read_states = read_states
        self.cold_starts: dict[str, dict[str, float]] = {}
        self.load_errors: dict[str, str] = {}  # the model failed to load in its replica, last we heard
        self._status: dict[str, dict[str, int]] = {}
        #: Since when (monotonic) each deployed pool has had no replica (HYBRID_IDLE_POOL_TTL_S).
        self._empty_since: dict[str, float] = {}
        #: Cold starts under way at once, across experiments (HYBRID_MAX_COLD_STARTS).
        self.starts = ColdStarts(settings.max_cold_starts)
        #: Requests on their way to a replica: a retirement or a stop ends their wait.
        self.in_flight = InFlight()
        self._watcher: asyncio.Task[None] | None = None
        #: The request path's plan for the experiment's latest arrival (set by the ingress).
        self.latest_plan: Callable[[str], PoolPlan] = lambda e: unused_plan(e, policy_from_settings(settings))

    def _admit(self, experiment: Experiment) -> None:
        """A cold experiment needs a replica slot: with every slot (HYBRID_MAX_REPLICAS) held by other
        experiments' replicas, say so at once rather than queue behind windows that may last minutes."""
        cap = self.settings.max_replicas
        if not cap:
            return
        mine = self._status.get(experiment.id, {})
        if mine.get("RUNNING", 0) + mine.get("STARTING", 0):
            return
        used = sum(states.get("RUNNING", 0) + states.get("STARTING", 0) for states in self._status.values())
        if used >= cap:
            raise Overloaded(f"{experiment.id}: all {cap} replica slots (HYBRID_MAX_REPLICAS) hold other experiments' "
                             f"replicas inside their windows; retry in {RETRY_AFTER_FULL_S:g}s",
                             retry_after_s=RETRY_AFTER_FULL_S)

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any) -> Prediction:
        """The replica's answer; a retirement of the experiment (404) or a stop (503) ends the wait for
        one at once (in_flight.py)."""
        return await self.in_flight.run(experiment.id, lambda ticket: self._predict(experiment, inputs, params, ticket))

    async def _predict(self, experiment: Experiment, inputs: list[str], params: Any, ticket: Ticket) -> Prediction:
        states = (await self.replica_states()).get(experiment.id, {})
        self._admit(experiment)
        timeout_s, arrived = self.settings.cold_start_timeout_s, time.monotonic()
        cold = not (states.get("RUNNING", 0) + states.get("STARTING", 0))
        try:
            async with self.starts.admit(experiment.id, cold, timeout_s):
                # its first request deploys the pool; a request after a swap waits for the new model
                await self.deployer.ensure(experiment, self.identity(experiment.id))
                request_at = time.time()
                result = await self._call(experiment, inputs, params, self.latest_plan(experiment.id), request_at,
                                          max(0.1, timeout_s - (time.monotonic() - arrived)), ticket)
        except NoStartSlot:
            raise Overloaded(f"{experiment.id}: {self.starts.limit} other experiments' cold starts (HYBRID_MAX_COLD_STARTS) "
                             f"kept every slot for {timeout_s:g}s; retry in {RETRY_AFTER_FULL_S:g}s",
                             retry_after_s=RETRY_AFTER_FULL_S) from None
        self.load_errors.pop(experiment.id, None)
        states = self._status.setdefault(experiment.id, {})  # a replica answered: it runs, whatever was last read
        states["RUNNING"] = max(1, states.get("RUNNING", 0))
        prediction = answered_prediction(result, request_at)
        if prediction.cold_start is not None and prediction.cold_start.first:
            self.cold_starts[experiment.id] = {**asdict(prediction.cold_start), "at": request_at}
        return prediction

    async def _call(self, experiment: Experiment, inputs: list[str], params: Any, plan: PoolPlan,
                    request_at: float, timeout_s: float, ticket: Ticket | None = None) -> dict[str, Any]:
        handle = self.handles.acquire(experiment.id)
        try:
            call = handle.predict.remote(inputs, params, request_at, plan.window_s, plan.decision.prewarm_after_s)
            return await await_worker(_answer(call, ticket), experiment.id, timeout_s, "replica")
        except ModelUnavailable as exc:
            self.load_errors[experiment.id] = scrub(exc.message)
            raise
        finally:
            self.handles.release(experiment.id)
            self._empty_since.pop(experiment.id, None)  # served just now: its time at zero starts again

    async def replica_states(self) -> dict[str, dict[str, int]]:
        """Replica counts by state per experiment, as the background watcher last read them."""
        if self._watcher is None or self._watcher.done():
            await self._read_status()  # the first time (or after a failure), read once before answering
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self._status

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            try:
                await self._read_status()
                at_zero = {e for e, states in self._status.items() if not states.get("RUNNING") and not states.get("STARTING")}
                await self.handles.close_idle(at_zero)
                await self._park_idle(at_zero)
            except Exception:  # the controller restarting, ...: keep the last state, read again later
                continue

    async def _park_idle(self, at_zero: set[str]) -> None:
        """Delete the pools that have had no replica for HYBRID_IDLE_POOL_TTL_S and have nothing planned
        (no pre-warm ahead): Serve's controller runs every deployed pool's policy each loop, so a
        hundred pools at zero would cost most of a core at rest. Their next request deploys them again."""
        now = time.monotonic()
        for experiment_id in set(self._empty_since) - at_zero:
            del self._empty_since[experiment_id]
        ttl = self.settings.idle_pool_ttl_s
        if not ttl:
            return
        for experiment_id in at_zero:
            since = self._empty_since.setdefault(experiment_id, now)
            if now - since < ttl or not self.deployer.deployed(experiment_id) or not self.handles.idle(experiment_id):
                continue
            try:  # one pool's trouble (its memory unreadable, ...) must not keep the others deployed
                if not await asyncio.to_thread(self._nothing_planned, experiment_id):
                    continue
            except Exception:
                log.exception("could not read the plan of %s's pool; it stays deployed", experiment_id)
                continue
            if not self.handles.idle(experiment_id) or experiment_id not in self._empty_since:
                continue  # a request is on its way to it, or was served, while its plan was read
            if self.deployer.park(experiment_id):
                self._empty_since.pop(experiment_id, None)
                await self.handles.drop(experiment_id)

    def _nothing_planned(self, experiment_id: str) -> bool:
        from backends.local_ray.pool import memory_key
        from backends.local_ray.scaling import DurableMemory, ReplicaReport, nothing_planned

        remembered = DurableMemory(memory_key(self.app_name, experiment_id)).read()
        return nothing_planned(ReplicaReport(**remembered) if remembered else None, time.time(),
                               self.settings.time_scale, self.settings.prewarm_lead_s)

    async def _read_status(self) -> None:
        self._status = await asyncio.to_thread(self._read_states, self.app_name)
        self.deployer.seen(set(self._status))

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        """A removed experiment's pool is deleted, a changed one's redeployed with the new model
        (requests in flight finish on the old replicas); an added one waits for its first request."""
        for experiment_id in change.removed:
            self.in_flight.retire(experiment_id)
            self.deployer.retire(experiment_id)
            await self.handles.drop(experiment_id)
            self.cold_starts.pop(experiment_id, None)
            self.load_errors.pop(experiment_id, None)
        for experiment_id in change.changed:
            experiment = registry.get(experiment_id)
            if experiment is not None:
                self.load_errors.pop(experiment_id, None)
                self.deployer.swap(experiment, self.identity(experiment_id))

    async def model_status(self) -> dict[str, ModelStatus]:
        out: dict[str, ModelStatus] = {}
        deployed = await self.replica_states()
        served = {e: {} for e in [*self.cold_starts, *self.load_errors] if e not in deployed}  # parked pools: cold
        for experiment_id, states in {**deployed, **served}.items():
            running, starting, stopping = states.get("RUNNING", 0), states.get("STARTING", 0), states.get("STOPPING", 0)
            if running and stopping:
                state = ModelState.SCALING_DOWN
            elif running:
                state = ModelState.WARM
            elif starting:
                state = ModelState.STARTING
            elif stopping:
                state = ModelState.SCALING_DOWN
            else:
                state = ModelState.COLD
            error = self.load_errors.get(experiment_id)
            out[experiment_id] = ModelStatus(ModelState.FAILED if error else state, replicas=running,
                                             last_cold_start=self.cold_starts.get(experiment_id), last_error=error,
                                             replica_states=states)
        return out

    async def cached_models(self) -> list[str]:
        return [e for e, states in (await self.replica_states()).items() if states.get("RUNNING", 0)]

    def begin_shutdown(self) -> None:
        """New requests and those still waiting for a replica (a cold start, a start slot, a swap) get
        503 now; those replicas run finish (`drain`)."""
        self.in_flight.stop_taking()

    async def drain(self, timeout_s: float) -> int:
        """After `begin_shutdown`: wait up to `timeout_s` for the requests replicas run, answer the rest
        503; how many were cut short."""
        return await self.in_flight.drain(timeout_s)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.handles.close()


class HybridIngress:
    """Serve ingress deployment: builds core's app at replica start (`__serve_build_asgi_app__`). The
    registry comes from the keeper actor (read when the app starts, then polled)."""

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

        deployer = PoolDeployer(self.settings, app_name, for_replicas)
        self.predictor = RayPredictor(self.settings, app_name, deployer, identity=registry.identity)
        self.path = RequestPath(self.settings, registry, self.predictor)
        self.predictor.latest_plan = lambda e: self.path.controller.latest(e) or self.path.controller.unused(e)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.path, backend="ray", mode=self.mode)

    def begin_shutdown(self) -> None:
        """The server stops (the driver calls this through a handle): new requests and those still
        waiting for a replica get 503 now."""
        self.path.begin_shutdown()

    async def drain(self, timeout_s: float) -> int:
        """Then: the requests replicas run get `timeout_s` to finish, the rest 503; how many were cut short."""
        return await self.predictor.drain(timeout_s)

"""The Ray ingress's predictor and its collaborators (start slots, replica counts, handles, idle pools,
the pool deployer) driven without Ray: Serve's handle and controller calls are the fakes."""

from __future__ import annotations

from contextlib import ExitStack

import asyncio
import threading
from types import SimpleNamespace

import pytest

from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.handles import Handles
from backends.local_ray.ingress import RayPredictor
from backends.local_ray.replica_slots import ReplicaSlots
from backends.local_ray.settings import load_ray_settings
from core.keepwarm.controller import plan_for
from core.keepwarm.decision import WindowDecision, WindowReason
from core.serving.errors import ModelUnavailable, Overloaded, UpstreamTimeout
from core.serving.model_status import ModelState
from core.serving.prediction import Prediction
from core.serving.registry import Experiment
from core.serving.remote_error import ErrorKind, RemoteError

NOW = 10_000.0


class _Call:
    """Stands for a DeploymentResponse: awaitable and cancellable; `hang`: no replica ever takes it."""

    def __init__(self, result: object = None, hang: bool = False):
        self.result, self.hang, self.cancelled = result, hang, False

    async def _fetch_future_result_async(self) -> None:  # Serve assigns the call to a replica
        if self.hang:
            await asyncio.sleep(3600)

    def __await__(self):
        return self.result
        yield

    def cancel(self) -> None:
        self.cancelled = True



def predictor_with(call: _Call, timeout_s: float = 0.2) -> RayPredictor:
    handle = SimpleNamespace(predict=SimpleNamespace(remote=lambda *args: call))
    settings = load_ray_settings(env_file=None, cold_start_timeout_s=timeout_s)
    deployer = PoolDeployer(settings, "hybrid-serve", for_replicas=_same, deploy=lambda experiment, identity: None)
    return RayPredictor(settings, "hybrid-serve", deployer, read_states=lambda app: {"e": {}},
                        handles=Handles("hybrid-serve", open_handle=lambda experiment_id, app: handle))



async def _same(experiment: Experiment) -> Experiment:
    return experiment



EXPERIMENT = Experiment(id="e", source="./x", task="feature-extraction")



DECISION = WindowDecision(900, WindowReason.ISOLATED, "")



PLAN = plan_for("e", DECISION, 0.0, 0.0)



def test_a_cold_start_longer_than_the_timeout_is_a_504_with_a_clear_message() -> None:
    call = _Call(hang=True)
    with pytest.raises(UpstreamTimeout, match="HYBRID_COLD_START_TIMEOUT_S"):
        asyncio.run(predictor_with(call).predict(EXPERIMENT, ["x"], None))
    assert call.cancelled



def test_replica_errors_come_back_with_their_status() -> None:
    call = _Call({"error": RemoteError(ErrorKind.MODEL_UNAVAILABLE, "e: sha256 mismatch")})
    with pytest.raises(ModelUnavailable, match="sha256"):
        asyncio.run(predictor_with(call).predict(EXPERIMENT, ["x"], None))



def test_a_replicas_load_error_is_kept_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a replica said about its failed load is shown in /experiments' last_error: MLflow named
    the URL it called, user and password included."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-9f8e7d6c")
    said = ("e: mlflow:models:/clf@champion: resolving failed: API request to http://alice:s3cret-pw@mlflow:5000/api "
            "failed (Authorization: Bearer tok-9f8e7d6c)")
    call = _Call({"error": RemoteError(ErrorKind.MODEL_UNAVAILABLE, said)})
    predictor = predictor_with(call)
    with pytest.raises(ModelUnavailable):
        asyncio.run(predictor.predict(EXPERIMENT, ["x"], None))
    expected = ("e: mlflow:models:/clf@champion: resolving failed: API request to http://***@mlflow:5000/api "
                "failed (Authorization: Bearer ***)")
    assert predictor.load_errors == {"e": expected}
    assert asyncio.run(predictor.model_status())["e"].last_error == expected



def test_a_cold_experiment_is_refused_at_once_when_every_replica_slot_is_taken() -> None:
    slots = ReplicaSlots(2)
    with pytest.raises(Overloaded, match="MODAL_MAX_CONTAINERS") as refused:
        with slots.taken("e", {"a": {"RUNNING": 1}, "b": {"STARTING": 1}, "e": {}}):
            pass
    assert refused.value.retry_after_s and refused.value.retry_after_s > 0
    with slots.taken("e", {"a": {"RUNNING": 1}, "b": {"STARTING": 1}, "e": {"RUNNING": 1}}):  # warm: its own replica
        pass
    with slots.taken("e", {"a": {"RUNNING": 1}, "e": {}}):  # a slot is free
        pass
    with ReplicaSlots(0).taken("e", {"a": {"RUNNING": 1}, "b": {"RUNNING": 1}}):  # no cap
        pass


def test_cold_starts_let_through_hold_their_slots_until_they_end() -> None:
    """64 requests for 64 cold experiments at once, before any replica shows: exactly the free slots
    go on (the hostile run that found the overshoot had 3 experiments start on a cap of 2)."""
    slots, states = ReplicaSlots(3), {"a": {"RUNNING": 1}}
    admitted, refused = [], 0
    with ExitStack() as held:
        for i in range(64):
            try:
                held.enter_context(slots.taken(f"e{i}", states))
                admitted.append(f"e{i}")
            except Overloaded:
                refused += 1
        assert (admitted, refused) == (["e0", "e1"], 62)
        with slots.taken("e0", states):  # the same experiment's other requests follow its start
            pass
    with slots.taken("e5", states):  # the starts ended (their replicas show in the states from now): free again
        pass


def test_handles_of_pools_long_at_zero_are_closed() -> None:
    """An open handle pushes its load to the controller five times a second: handles close once
    their pool has been at zero for a while, so the control plane's cost follows the experiments in use."""
    closed: list[str] = []
    opened: list[str] = []

    class Handle:
        def __init__(self, name: str) -> None:
            self.name = name

        async def shutdown_async(self) -> None:
            closed.append(self.name)

    handles = Handles("app", idle_s=0.0, open_handle=lambda experiment, app: opened.append(experiment) or Handle(experiment))

    async def scenario() -> None:
        handles.acquire("a")
        handles.release("a")
        handles.acquire("b")  # in flight
        await handles.close_idle({"a", "b"})
        assert closed == ["a"] and handles.open_ids() == ["b"]
        handles.release("b")
        await handles.close_idle(set())  # b's pool is warm: its handle stays open
        assert handles.open_ids() == ["b"]
        handles.acquire("a")  # a's next request opens a new handle
        assert opened == ["a", "b", "a"]

    asyncio.run(scenario())



class _Pools:
    """Deploy and delete at Serve's boundary: records the calls, a deletion can be held up."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    def deploy(self, experiment: Experiment, identity: str | None) -> None:
        self.calls.append(("deploy", experiment.id))

    def delete(self, experiment_id: str) -> None:
        self.release.wait(10)
        self.calls.append(("delete", experiment_id))



def test_a_parked_pool_is_deleted_and_a_request_meanwhile_waits_then_deploys_it_again() -> None:
    pools = _Pools()
    deployer = PoolDeployer(load_ray_settings(env_file=None), "app", _same, deploy=pools.deploy, delete=pools.delete)

    async def scenario() -> None:
        await deployer.ensure(EXPERIMENT, None)
        pools.release.clear()  # the deletion takes a while
        assert deployer.park("e") and not deployer.deployed("e")
        await asyncio.sleep(0.05)
        request = asyncio.create_task(deployer.ensure(EXPERIMENT, None))
        await asyncio.sleep(0.05)
        assert not request.done()  # it waits for the deletion, not for a pool that is going
        deployer.seen({"e"})  # Serve still lists the pool being deleted: not taken for deployed
        assert not deployer.deployed("e")
        pools.release.set()
        await request
        assert deployer.deployed("e")
        assert pools.calls == [("deploy", "e"), ("delete", "e"), ("deploy", "e")]
        assert not deployer.park("unknown")

    asyncio.run(scenario())



def test_a_request_during_a_swap_waits_for_the_new_pool() -> None:
    """A change answered is in force: a request that arrives while the pool is redeployed meets the
    new model, not the old replicas still draining."""
    pools = _Pools()
    swapping = threading.Event()
    deploy = pools.deploy
    pools.deploy = lambda experiment, identity: (swapping.wait(10), deploy(experiment, identity))  # type: ignore[method-assign]
    deployer = PoolDeployer(load_ray_settings(env_file=None), "app", _same, deploy=pools.deploy, delete=pools.delete)

    async def scenario() -> None:
        swapping.set()
        await deployer.ensure(EXPERIMENT, None)
        swapping.clear()  # the new model's pool takes a while
        deployer.swap(EXPERIMENT.model_copy(update={"source": "./y"}), None)
        request = asyncio.create_task(deployer.ensure(EXPERIMENT, None))
        await asyncio.sleep(0.05)
        assert not request.done()
        swapping.set()
        await request
        assert pools.calls == [("deploy", "e"), ("deploy", "e")]

    asyncio.run(scenario())



def test_a_pool_deployed_again_before_its_deletion_began_is_not_deleted() -> None:
    pools = _Pools()
    deployer = PoolDeployer(load_ray_settings(env_file=None), "app", _same, deploy=pools.deploy, delete=pools.delete)

    async def scenario() -> None:
        await deployer.ensure(EXPERIMENT, None)
        assert deployer.park("e")
        await deployer.ensure(EXPERIMENT, None)  # the next request came first
        await deployer.settle()
        assert deployer.deployed("e") and pools.calls == [("deploy", "e"), ("deploy", "e")]

    asyncio.run(scenario())



def plans_with_a_prewarm_ahead_of(*experiment_ids: str):  # type: ignore[no-untyped-def]
    """The window controller's plans: a pre-warm ahead for these experiments, nothing for the others."""
    ahead = WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=600)
    return lambda: {e: plan_for(e, ahead, 10.0, 5.0) for e in experiment_ids}


def test_pools_idle_at_zero_past_the_ttl_are_parked_unless_busy_or_planned() -> None:
    pools = _Pools()
    settings = load_ray_settings(env_file=None, idle_pool_ttl_s=0.3)
    deployer = PoolDeployer(settings, "app", _same, deploy=pools.deploy, delete=pools.delete)
    states = {"e": {"RUNNING": 1}, "planned": {}, "busy": {}}
    handle = SimpleNamespace(shutdown_async=lambda: asyncio.sleep(0))
    predictor = RayPredictor(settings, "app", deployer, read_states=lambda app: states,
                             handles=Handles("app", open_handle=lambda experiment_id, app: handle),
                             plans=plans_with_a_prewarm_ahead_of("planned"))

    async def tick() -> set[str]:
        await predictor.replicas._read()
        await predictor.idle_pools.park({e for e, s in predictor.replicas.states.items() if not s.get("RUNNING")})
        await deployer.settle()
        return {e for _, e in pools.calls if _ == "delete"}

    async def scenario() -> None:
        for experiment_id in states:
            await deployer.ensure(Experiment(id=experiment_id, source="./x", task="feature-extraction"), None)
        predictor.handles.acquire("busy")  # a request on its way to a replica
        assert await tick() == set()  # at zero, but not for long yet
        states["e"] = {}
        await asyncio.sleep(0.35)
        assert await tick() == set()  # "e" has only just reached zero; "planned" has a pre-warm ahead
        await asyncio.sleep(0.35)
        assert await tick() == {"e"}
        states.pop("e")  # Serve no longer lists it: /experiments still shows it, cold
        predictor.cold_starts["e"] = {"at": 1.0}
        assert (await predictor.model_status())["e"].state is ModelState.COLD
        predictor.handles.release("busy")
        await asyncio.sleep(0.35)
        assert await tick() == {"e", "busy"}
        predictor.idle_pools.ttl_s = 0  # 0: never
        predictor.idle_pools.plans = plans_with_a_prewarm_ahead_of()
        await asyncio.sleep(0.35)
        assert await tick() == {"e", "busy"}
        predictor.idle_pools.ttl_s = 0.3
        predictor.idle_pools.plans = plans_with_a_prewarm_ahead_of()
        await asyncio.sleep(0.35)
        assert await tick() == {"e", "busy", "planned"}  # its pre-warm is over: nothing planned

    asyncio.run(scenario())


def test_a_request_starts_its_pools_time_at_zero_again() -> None:
    """A replica can start, serve and stop between two status reads: the request itself restarts the
    count, so a pool used a second ago is never deleted as if idle since long."""
    predictor = predictor_with(_Call({"prediction": Prediction([], False, 0.0, 0.0, 0.0, 0)}), timeout_s=5)  # as a worker answers
    predictor.idle_pools.empty_since["e"] = 0.0  # at zero for ages, as the last read saw it
    asyncio.run(predictor._call(EXPERIMENT, ["x"], None, NOW, 5.0))
    assert "e" not in predictor.idle_pools.empty_since


def test_a_request_goes_to_a_replica_only_once_its_arrival_is_published() -> None:
    """The policy must see an arrival before any replica does: the predictor awaits the publication
    before the handle call, and the replica gets no window — only the inputs and the arrival time."""
    order: list[str] = []
    calls: list[tuple] = []

    async def publish(experiment_id: str) -> None:
        await asyncio.sleep(0.01)
        order.append(f"published {experiment_id}")

    def remote(*args: object) -> _Call:
        order.append("called")
        calls.append(args)
        return _Call({"prediction": Prediction([[0.0]], False, 0.0, 0.0, 1.0, 1)})

    handle = SimpleNamespace(predict=SimpleNamespace(remote=remote))
    settings = load_ray_settings(env_file=None)
    deployer = PoolDeployer(settings, "app", _same, deploy=lambda experiment, identity: None)
    predictor = RayPredictor(settings, "app", deployer, read_states=lambda app: {"e": {}}, publish=publish,
                             handles=Handles("app", open_handle=lambda experiment_id, app: handle))
    assert asyncio.run(predictor.predict(EXPERIMENT, ["x"], None)).outputs == [[0.0]]
    assert order == ["published e", "called"]
    [(inputs, params, request_at)] = calls
    assert inputs == ["x"] and params is None and request_at > NOW



def test_deploys_waiting_on_serve_leave_the_event_loops_threads_free() -> None:
    """Cold experiments deploy at once, each waiting seconds for Serve's controller: the ingress's
    other blocking calls (publishing an arrival, reading replica counts) still get a thread."""
    serve_busy = threading.Event()
    deployer = PoolDeployer(load_ray_settings(env_file=None), "app", _same,
                            deploy=lambda experiment, identity: serve_busy.wait(10))

    async def scenario() -> None:
        deploys = [asyncio.create_task(deployer.ensure(EXPERIMENT.model_copy(update={"id": f"e{i}"}), None))
                   for i in range(12)]  # more than the event loop's default threads on any small machine
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "published"), 2) == "published"
        assert not any(d.done() for d in deploys)
        serve_busy.set()
        await asyncio.gather(*deploys)
        assert all(deployer.deployed(f"e{i}") for i in range(12))

    try:
        asyncio.run(scenario())
    finally:
        serve_busy.set()

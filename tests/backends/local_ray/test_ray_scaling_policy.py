"""The scaledown-window decision behind the Ray backend, as a pure function (no Ray needed)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from backends.local_ray import scaling
from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.ingress import Handles, RayPredictor
from backends.local_ray.scaling import ReplicaReport, ScalingInputs, desired_replicas, reports_from_metrics
from backends.local_ray.settings import load_ray_settings
from core.keepwarm.controller import plan_for
from core.keepwarm.decision import WindowDecision, WindowReason
from core.serving.errors import ModelUnavailable, Overloaded, UpstreamTimeout
from core.serving.model_status import ModelState
from core.serving.registry import Experiment
from core.serving.remote_error import ErrorKind, RemoteError

NOW = 10_000.0


def report(idle_real_s: float, window_s: float | None, last_request: float = 0.0, in_flight: int = 0) -> ReplicaReport:
    return ReplicaReport(last_busy=NOW - idle_real_s, in_flight=in_flight,
                         last_request=None if window_s is None else last_request, window_s=window_s)


def decide(reports: list[ReplicaReport], ongoing: float = 0, scale: float = 1, unreported: int = 0, max_replicas: int = 10):
    return desired_replicas(ScalingInputs(NOW, reports, ongoing, target_ongoing=2, time_scale=scale,
                                          max_replicas=max_replicas, unreported=unreported))


def test_warm_inside_the_window_and_zero_at_its_end() -> None:
    assert decide([report(899.9, 900)]).replicas == 1
    decision = decide([report(900.0, 900)])
    assert decision.replicas == 0 and "≥ window 900s" in decision.reason


def test_time_scale_multiplies_real_idle_time() -> None:
    assert decide([report(2.9, 900)], scale=300).replicas == 1  # 870 emulated seconds
    assert decide([report(3.0, 900)], scale=300).replicas == 0  # 900 emulated seconds


def test_the_latest_decision_is_the_window_in_force_for_every_replica() -> None:
    # replica B served the latest request with the long window: A is kept by it too, as on Modal
    a, b = report(1000, 900, last_request=1), report(10, 1800, last_request=2)
    assert decide([a, b]).replicas == 2
    a, b = report(1000, 1800, last_request=1), report(10, 900, last_request=2)
    assert decide([a, b]).replicas == 1


def test_in_flight_requests_keep_a_replica_whatever_the_window() -> None:
    assert decide([report(10_000, 2, in_flight=1)]).replicas == 1


def test_an_idle_replica_whose_model_failed_to_load_goes_at_once() -> None:
    """It holds no model: keeping it for the window would hold a replica slot for nothing; the next
    request starts a new replica, which loads the model again."""
    failed = ReplicaReport(NOW - 1, 0, NOW - 2, 900.0, failed=True)
    decision = decide([failed])
    assert decision.replicas == 0 and "failed to load" in decision.reason
    assert decide([ReplicaReport(NOW, 1, NOW, 900.0, failed=True)]).replicas == 1  # a request still on it
    assert decide([failed, report(1, 900, last_request=NOW - 1)]).replicas == 1  # a healthy one keeps its window


def test_load_scales_up_to_the_maximum() -> None:
    busy = report(0, 900, in_flight=2)
    assert decide([busy], ongoing=7).replicas == 4  # ceil(7 / 2)
    assert decide([busy], ongoing=100, max_replicas=3).replicas == 3


def test_an_idle_pool_does_not_take_the_handles_stale_load_for_traffic() -> None:
    """The handles push their load every second, averaged over a second: once every replica reports
    idle, that figure only echoes the past and must not hold a replica past its window."""
    assert decide([report(900.0, 900)], ongoing=1).replicas == 0
    assert decide([], ongoing=1).replicas == 1  # no replica: the handle's queue is the only signal (a cold start)


def test_starting_and_unserved_replicas_are_kept() -> None:
    assert decide([], unreported=1).replicas == 1
    assert decide([report(50, None)]).replicas == 1  # up, waiting for its first request
    assert decide([]).replicas == 0


def test_reports_from_serve_metrics_take_the_latest_point() -> None:
    point = lambda t, v: SimpleNamespace(timestamp=t, value=v)  # noqa: E731
    raw = {
        scaling.LAST_BUSY: {"r1": [point(1, 1.0), point(2, 5.0)]},
        scaling.LAST_REQUEST: {"r1": [point(2, 4.0)]},
        scaling.WINDOW: {"r1": [point(2, 900.0)]},
        scaling.IN_FLIGHT: {"r1": [point(1, 0.0), point(2, 0.0)]},
    }
    assert reports_from_metrics(raw, ["r1", "r2"]) == [ReplicaReport(5.0, 0, 4.0, 900.0)]


def test_a_metric_missing_from_the_latest_sample_is_not_taken_from_older_ones() -> None:
    """A replica that served a pre-warm decision, then a plain one, stops reporting PREWARM; its older
    points linger in Serve's look-back period but are no longer the replica's decision."""
    point = lambda t, v: SimpleNamespace(timestamp=t, value=v)  # noqa: E731
    raw = {
        scaling.LAST_BUSY: {"r1": [point(1, 1.0), point(2, 5.0)]},
        scaling.IN_FLIGHT: {"r1": [point(1, 0.0), point(2, 0.0)]},
        scaling.LAST_REQUEST: {"r1": [point(1, 1.0), point(2, 4.0)]},
        scaling.WINDOW: {"r1": [point(1, 300.0), point(2, 900.0)]},
        scaling.PREWARM: {"r1": [point(1, 600.0)]},
    }
    assert reports_from_metrics(raw, ["r1"]) == [ReplicaReport(5.0, 0, 4.0, 900.0, None)]


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


def prewarm_report(idle_real_s: float, prewarm_s: float, window_s: float) -> ReplicaReport:
    return ReplicaReport(last_busy=NOW - idle_real_s, in_flight=0, last_request=1.0, window_s=window_s, prewarm_s=prewarm_s)


def test_a_prewarm_scales_to_zero_then_brings_one_replica_back_before_the_request_is_due() -> None:
    # pre-warm after 600 s (emulated, scale 10 → 60 s real), keep 120 s; lead 5 s real
    def at(idle_real: float, running: bool) -> int:
        r = prewarm_report(idle_real, 600, 120)
        reports, remembered = ([r], None) if running else ([], r)
        return desired_replicas(ScalingInputs(NOW, reports, 0, 2, 10, 10, remembered=remembered, prewarm_lead_s=5)).replicas

    assert at(1, running=True) == 0  # idle: let it go at once
    assert at(30, running=False) == 0  # waiting for the pre-warm
    assert at(55.5, running=False) == 1  # 4.5 s before the request is due: bring one back
    assert at(65, running=True) == 1  # kept during the keep window (600..720 s emulated)
    assert at(72.5, running=True) == 0  # keep window over: scale to zero


def test_a_prewarmed_replica_that_has_not_served_yet_holds_until_the_keep_window_ends() -> None:
    """The pre-warmed replica reports its start as its last busy time; the experiment's idle clock
    still runs from its last request (it used to restart, so the replica was let go and pre-warmed
    again in a loop, and the request it was started for found none)."""
    def at(idle_real: float, started_real_ago: float) -> int:
        remembered = prewarm_report(idle_real, 600, 120)
        prewarmed = ReplicaReport(last_busy=NOW - started_real_ago, in_flight=0)
        return desired_replicas(ScalingInputs(NOW, [prewarmed], 0, 2, 10, 10, remembered=remembered,
                                              prewarm_lead_s=5)).replicas

    assert at(58, started_real_ago=1) == 1  # the request is due in 2 s: keep it
    assert at(65, started_real_ago=8) == 1  # the request is late, the keep window holds it
    assert at(72.5, started_real_ago=15) == 0  # keep window over


def test_a_request_in_flight_is_never_cut_by_a_prewarm_plan() -> None:
    busy = ReplicaReport(last_busy=NOW, in_flight=1, last_request=1.0, window_s=120, prewarm_s=600)
    assert desired_replicas(ScalingInputs(NOW, [busy], 1, 2, 10, 10, prewarm_lead_s=5)).replicas == 1


def test_the_policy_keeps_its_memory_in_serves_policy_state() -> None:
    """The latest decision is remembered in the state Serve hands back to the policy, not in the
    policy object: a fresh policy object given that state decides the pre-warm the same way."""
    point = lambda v: [SimpleNamespace(timestamp=1, value=v)]  # noqa: E731
    raw = {scaling.LAST_BUSY: {"r1": point(NOW - 1)}, scaling.IN_FLIGHT: {"r1": point(0.0)},
           scaling.LAST_REQUEST: {"r1": point(NOW - 2)}, scaling.WINDOW: {"r1": point(120.0)},
           scaling.PREWARM: {"r1": point(600.0)}}

    def ctx(running: list[str], metrics: dict, state: dict, now: float) -> SimpleNamespace:
        return SimpleNamespace(current_time=now, running_replicas=running, raw_metrics=metrics, policy_state=state,
                               total_num_requests=0, capacity_adjusted_max_replicas=10, target_num_replicas=len(running))

    replicas, state = scaling.ScaledownWindowPolicy("e", time_scale=10, prewarm_lead_s=5)(ctx(["r1"], raw, {}, NOW))
    assert replicas == 0 and state[scaling.REMEMBERED]["prewarm_s"] == 600.0
    fresh = scaling.ScaledownWindowPolicy("e", time_scale=10, prewarm_lead_s=5)  # e.g. the controller restarted it
    assert fresh(ctx([], {}, state, NOW + 30))[0] == 0  # waiting for the pre-warm
    assert fresh(ctx([], {}, state, NOW + 56))[0] == 1  # 4 s before the request is due
    assert fresh(ctx([], {}, {}, NOW + 56))[0] == 0  # without the state it would know nothing


def test_replicas_still_starting_count_as_capacity() -> None:
    """Under steady load a noisy load estimate used to cancel replicas while they started (37 of 38
    removed replicas, measured): a starting replica is capacity on its way, kept like a warm one."""
    busy = report(0.1, 900, in_flight=1)
    starting = desired_replicas(ScalingInputs(NOW, [busy], 2, 2, 1.0, 10, starting=2))
    assert starting.replicas == 3  # load says 1, but two are starting: keep them
    assert desired_replicas(ScalingInputs(NOW, [], 0, 2, 1.0, 10, starting=1)).replicas == 1  # e.g. a recovering controller


def test_a_replica_that_never_starts_stops_holding_the_pool() -> None:
    policy = scaling.ScaledownWindowPolicy("e", start_timeout_s=30)
    ctx = lambda now: SimpleNamespace(current_time=now, running_replicas=[], raw_metrics={}, policy_state=state,  # noqa: E731
                                      total_num_requests=0, capacity_adjusted_max_replicas=10, target_num_replicas=1)
    state: dict = {}
    replicas, state = policy(ctx(NOW))
    assert replicas == 1  # starting: kept
    replicas, state = policy(ctx(NOW + 31))
    assert replicas == 0  # not placeable for longer than the cold-start timeout: let it go


def test_a_cold_experiment_is_refused_at_once_when_every_replica_slot_is_taken() -> None:
    predictor = predictor_with(_Call({}), timeout_s=5)
    predictor.settings = load_ray_settings(env_file=None, max_replicas=2)
    predictor._status = {"a": {"RUNNING": 1}, "b": {"STARTING": 1}, "e": {}}
    with pytest.raises(Overloaded, match="HYBRID_MAX_REPLICAS") as refused:
        predictor._admit(EXPERIMENT)
    assert refused.value.retry_after_s and refused.value.retry_after_s > 0
    predictor._status["e"] = {"RUNNING": 1}  # warm: it is served by its own replica
    predictor._admit(EXPERIMENT)
    predictor._status = {"a": {"RUNNING": 1}, "e": {}}  # a slot is free
    predictor._admit(EXPERIMENT)


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


def test_a_replica_that_never_served_follows_the_window_in_force() -> None:
    """Serve may stop the replica that served the requests and keep one that started later and served
    none: the window decided for the latest request still applies to it, counted from its start."""
    served_then_gone = ReplicaReport(NOW - 5, 0, NOW - 6, 600.0)
    never_used = report(601, None)  # up for 601 s, no request
    decision = desired_replicas(ScalingInputs(NOW, [never_used], 0, 1, 1.0, 10, remembered=served_then_gone))
    assert decision.replicas == 0 and decision.window_s == 600.0
    young = report(100, None)
    assert desired_replicas(ScalingInputs(NOW, [young], 0, 1, 1.0, 10, remembered=served_then_gone)).replicas == 1


def test_pools_configured_at_once_on_many_threads_all_get_their_policy() -> None:
    """Two cold starts build their pools on worker threads at once; Serve pickles the policy and the
    request router by value with a process-wide cloudpickle registration that two threads at once
    break (ValueError)."""
    from concurrent.futures import ThreadPoolExecutor

    from backends.local_ray.pool import pool_application
    from backends.local_ray.settings import load_ray_settings

    settings = load_ray_settings(env_file=None)
    experiments = [Experiment(id=f"e{i}", source="org/model", task="feature-extraction") for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        apps = list(pool.map(lambda e: pool_application(settings, "app", e, None), experiments))
    configs = [app._bound_deployment._deployment_config for app in apps]
    assert [c.autoscaling_config.policy.policy_kwargs["experiment"] for c in configs] == [e.id for e in experiments]
    assert all(c.autoscaling_config.policy.get_serialized_policy_def() for c in configs)


def test_a_pool_at_zero_has_nothing_planned_unless_a_prewarm_is_ahead_or_running() -> None:
    plain = ReplicaReport(NOW - 1000, 0, NOW - 1000, 900.0)
    assert scaling.nothing_planned(plain, NOW, 1.0, 5.0)
    assert scaling.nothing_planned(None, NOW, 1.0, 5.0)  # never served
    # pre-warm 600 s after the last request (scale 10: 60 s real), keep 120 s emulated (12 s real), lead 5 s real
    plan = lambda idle_real: ReplicaReport(NOW - idle_real, 0, NOW - idle_real, 120.0, prewarm_s=600.0)  # noqa: E731
    assert not scaling.nothing_planned(plan(30), NOW, 10.0, 5.0)  # the pre-warm is still ahead
    assert not scaling.nothing_planned(plan(60), NOW, 10.0, 5.0)  # it runs
    assert scaling.nothing_planned(plan(73), NOW, 10.0, 5.0)  # it is over: only a request brings it back


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


def test_pools_idle_at_zero_past_the_ttl_are_parked_unless_busy_or_planned() -> None:
    pools = _Pools()
    settings = load_ray_settings(env_file=None, idle_pool_ttl_s=0.3)
    deployer = PoolDeployer(settings, "app", _same, deploy=pools.deploy, delete=pools.delete)
    states = {"e": {"RUNNING": 1}, "planned": {}, "busy": {}}
    handle = SimpleNamespace(shutdown_async=lambda: asyncio.sleep(0))
    predictor = RayPredictor(settings, "app", deployer, read_states=lambda app: states,
                             handles=Handles("app", open_handle=lambda experiment_id, app: handle))
    predictor._nothing_planned = lambda experiment_id: experiment_id != "planned"  # type: ignore[method-assign]

    async def tick() -> set[str]:
        await predictor._read_status()
        at_zero = {e for e, s in predictor._status.items() if not s.get("RUNNING") and not s.get("STARTING")}
        await predictor._park_idle(at_zero)
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
        predictor.settings = load_ray_settings(env_file=None, idle_pool_ttl_s=0)  # 0: never
        predictor._nothing_planned = lambda experiment_id: True  # type: ignore[method-assign]
        await asyncio.sleep(0.35)
        assert await tick() == {"e", "busy"}

    asyncio.run(scenario())


def test_a_request_starts_its_pools_time_at_zero_again() -> None:
    """A replica can start, serve and stop between two status reads: the request itself restarts the
    count, so a pool used a second ago is never deleted as if idle since long."""
    predictor = predictor_with(_Call({"prediction": {"outputs": []}}), timeout_s=5)
    predictor._empty_since["e"] = 0.0  # at zero for ages, as the last read saw it
    asyncio.run(predictor._call(EXPERIMENT, ["x"], None, PLAN, NOW, 5.0))
    assert "e" not in predictor._empty_since

"""The durable window reconciler on Modal, with an injected clock: ingresses publish arrivals to the
shared state (a strict stand-in for `modal.Dict`), one reconciler folds them and applies autoscaler
states through a recorded stand-in for `update_autoscaler`. Plus: the same decision function drives
the local Ray emulator's policy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from backends.local_ray.scaling import ReplicaReport, ScalingInputs, desired_replicas
from backends.modal_backend.ingress import PublishingTracker
from backends.modal_backend.pools import PoolKey, pool_key
from backends.modal_backend.reconciler import ReconcilerLoop, WindowReconciler
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.live_containers import pool_name
from backends.modal_backend.state_store import ModalDictStore, arrivals_key, live_key
from core.keepwarm.controller import plan_for, pool_state
from core.keepwarm.decision import WindowDecision, WindowReason
from core.keepwarm.policies import policy_from_settings
from core.serving.registry import Experiment, Registry
from backends.modal_backend.settings import load_modal_settings
from core.settings import MODAL_MIN_WINDOW_S, Settings
from tests.backends.modal.modal_harness import StrictDict
from tests.conftest import FakeClock

REGISTRY = Registry({e: Experiment(id=e, source="org/model", task="feature-extraction") for e in ("cron", "bursty", "e")})


class Autoscaler:
    """Stands for `ExperimentModel(experiment_id=E).update_autoscaler(...)`: records what each pool got."""

    def __init__(self, clock: FakeClock, failures: int = 0):
        self.clock, self.failures = clock, failures
        self.calls: list[tuple[float, str, int, int]] = []
        self.pools: list[tuple[PoolKey, int, int]] = []
        self.max_containers: dict[str, int | None] = {}  # each pool's (by name) last max_containers

    async def __call__(self, pool: PoolKey, window_s: int, min_containers: int, max_containers: int | None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Modal API unreachable")
        self.calls.append((self.clock.now, pool.experiment_id, window_s, min_containers))
        self.pools.append((pool, window_s, min_containers))
        if max_containers is not None:
            self.max_containers[pool.experiment_id] = max_containers

    def states(self, experiment_id: str) -> list[tuple[float, int, int]]:
        return [(t, w, m) for t, e, w, m in self.calls if e == experiment_id]


class World:
    """Ingress containers, one reconciler and the shared state, on one fake clock."""

    def __init__(self, settings: Settings, deployment: str = "deploy-1", failures: int = 0):
        self.settings, self.clock = settings, FakeClock(1_000_000.0)
        self.store = ModalDictStore(StrictDict())
        self.registry = DictRegistrySource(self.store, Path("."))
        for experiment in REGISTRY:  # the shared registry, as the deploy seeds it
            asyncio.run(self.registry.put(experiment))
        self.autoscaler = Autoscaler(self.clock, failures)
        self.reconciler = self.new_reconciler(deployment)
        self.pokes = 0

    def new_reconciler(self, deployment: str) -> WindowReconciler:
        return WindowReconciler(self.settings, DictRegistrySource(self.store, Path(".")), self.store, self.autoscaler,
                                deployment, clock=self.clock)

    def ingress(self, name: str, flush_s: float = 2.0) -> PublishingTracker:
        async def poke() -> None:
            self.pokes += 1

        policy = policy_from_settings(self.settings)
        return PublishingTracker(self.settings.activity_window, 10 * 24 * 3600, self.store, poke, learner=policy.learner,
                                 flush_s=flush_s, container=name, clock=self.clock)

    def request(self, ingress: PublishingTracker, experiment_id: str, duration_s: float = 0.5) -> None:
        ingress.record_request(experiment_id)
        self.clock.advance(duration_s)
        ingress.record_completion(experiment_id)

    def run(self, work: Any) -> Any:
        return asyncio.run(work)


def test_a_completion_is_published_within_the_flush_interval_naming_the_pool_the_request_went_to() -> None:
    """The arrival's flush may go before its request knows its pool (an MLflow alias resolved under
    load: published with no pool, the reconciler cannot steer a moving source's pool). The completion
    is published within the flush interval as well, naming the pool — not only with the next arrival."""
    world = World(load_modal_settings(env_file=None))
    ingress = world.ingress("i", flush_s=0.1)
    published: list[dict[str, Any]] = []

    async def scenario() -> None:
        ingress.record_request("e")
        await asyncio.sleep(0.3)  # the arrival's flush: no pool known yet
        experiment = REGISTRY.get("e")
        assert experiment is not None
        ingress.served_by(pool_key(experiment, None))
        ingress.record_completion("e")
        await asyncio.sleep(0.3)  # no other request: the completion's own flush
        published.extend((await world.store.get(arrivals_key("i")))["batches"])

    world.run(scenario())
    assert [entry["pool"] is not None for entry in published] == [False, True]
    assert published[1]["batch"]["finished_at"] is not None


def test_a_quiet_month_loses_no_registry_entry_nor_what_the_policy_learned() -> None:
    """modal drops an entry untouched for 7 days: with scheduled passes only (no request, no container
    start, the registry stamp never moving), every lasting entry is still there a month later."""
    world = World(load_modal_settings(env_file=None))
    world.store = ModalDictStore(StrictDict(clock=world.clock))  # expires entries by modal's rule
    world.registry = DictRegistrySource(world.store, Path("."))
    for experiment in REGISTRY:
        world.run(world.registry.put(experiment))
    world.reconciler = world.new_reconciler("deploy-1")
    ingress = world.ingress("i")
    world.request(ingress, "cron")
    world.run(ingress.flush())
    world.run(world.store.put("registry-seeded", "deploy-1"))
    world.run(world.store.put("scratch", 1))  # nobody's lasting entry
    world.run(world.reconciler.reconcile())
    for _ in range(30 * 24):  # a quiet month: the scheduled pass every hour, nothing else
        world.clock.advance(3600)
        world.run(world.reconciler.reconcile())
    keys = set(world.run(world.store.keys()))
    assert "scratch" not in keys, "the fake expires what nobody read, as modal does"
    assert {"registry/cron", "registry/bursty", "registry/e", "registry-stamp", "registry-seeded", "activity/cron"} <= keys
    _, registry = world.run(DictRegistrySource(world.store, Path(".")).read())
    assert [e.id for e in registry] == ["bursty", "cron", "e"]


def test_an_entry_that_cannot_be_read_never_fails_a_pass_nor_the_others_keep_alive() -> None:
    world = World(load_modal_settings(env_file=None))
    real_get = world.store.get
    read: list[str] = []

    async def get(key: str) -> Any:
        if key == "usage-total/ghost":
            raise ConnectionError("this entry cannot be read now")
        read.append(key)
        return await real_get(key)

    world.run(world.store.put("usage-total/ghost", {"unreadable": True}))
    world.store.get = get  # type: ignore[method-assign]
    ingress = world.ingress("i")
    world.request(ingress, "cron")
    world.run(ingress.flush())
    world.run(world.reconciler.reconcile())  # the pass holds
    assert world.autoscaler.states("cron"), "the windows were applied"
    assert {"registry/cron", "registry/bursty", "registry/e", "registry-stamp"} <= set(read)
    assert world.run(real_get("kept-alive-at")) == world.clock.now


def adaptive(**overrides: Any) -> Settings:
    return load_modal_settings(env_file=None, policy_name="adaptive", prewarm_lead_s=60, **overrides)


def test_a_day_of_a_cron_job_and_a_bursty_experiment() -> None:
    """Every pre-warm is raised before its request is due and lowered again: min_containers never
    stays at 1 between two pre-warms, whatever the ingress containers do."""
    world = World(adaptive())

    async def day() -> None:
        cron_at = [world.clock.now + 1800 * i for i in range(48)]  # every 30 minutes
        bursts = {world.clock.now + h * 3600 + 120: 8 for h in (0, 3, 4, 9, 15, 16, 22)}
        requests = sorted([(t, "cron") for t in cron_at] + [(t + i, "bursty") for t, n in bursts.items() for i in range(n)])
        end = cron_at[-1] + 4 * 3600  # long enough for the last pre-warm to run out
        next_tick = world.clock.now
        ingress = world.ingress("ingress-1")
        for at, experiment_id in requests + [(end, "")]:
            while next_tick < at:  # the scheduled reconciler, and the wake-ups it asks for
                world.clock.now = next_tick
                due = await world.reconciler.reconcile()
                next_tick = min(next_tick + 60, world.clock.now + due) if due is not None else next_tick + 60
            if experiment_id:
                world.clock.now = at
                world.request(ingress, experiment_id)
                await ingress.flush()
                await world.reconciler.reconcile()  # the ingress's poke

    world.run(day())
    cron = world.autoscaler.states("cron")
    first_request = 1_000_000.0
    pinned = [t for t, w, m in cron if m == 1]
    # pinned only within a minute before a request due at a multiple of 30 minutes (the pre-warm) or
    # within a minute after one (the spell's hold)
    for t in pinned:
        assert (first_request - t) % 1800 <= 61 or (t - first_request) % 1800 <= 61, t - first_request
    raises = [t for t in pinned if 0 < (first_request - t) % 1800 <= 61]
    assert len(raises) >= 30  # learned within the first hours: then a pre-warm before every request
    for (t, w, m), (t2, w2, m2) in zip(cron, cron[1:]):
        assert MODAL_MIN_WINDOW_S <= w <= 3600
        if m == 1 and m2 == 1:  # the pre-warm's pin, then the spell's hold from the request on ...
            assert (t2 - first_request) % 1800 <= 61
    assert cron[-1][2] == 0  # ... and nothing pinned between them, nor at the end of the day
    bursty = world.autoscaler.states("bursty")
    assert bursty and all(MODAL_MIN_WINDOW_S <= w <= 3600 for _, w, _ in bursty)
    assert bursty[-1][2] == 0


def test_a_request_on_schedule_lowers_the_pinned_container() -> None:
    """The first backend's pre-warm task, cancelled by the request it waited for, left min_containers
    at 1 for good: here the request simply makes the desired state 'scaled down until the next one'."""
    world = World(adaptive())
    ingress = world.ingress("i")
    pinned_at_request: list[int] = []

    async def scenario() -> None:
        start = world.clock.now
        for i in range(20):  # every 20 minutes: a pre-warm is learned within a few hours
            world.clock.now = start + 1200 * i
            world.request(ingress, "cron")
            await ingress.flush()
            await world.reconciler.reconcile()  # the ingress's poke, right after the request
            world.clock.now = start + 1200 * i + 61
            await world.reconciler.reconcile()  # the wake-up the plan asked for: the spell's minute is over
            pinned_at_request.append(world.autoscaler.states("cron")[-1][2])
            world.clock.now = start + 1200 * (i + 1) - 59.5
            await world.reconciler.reconcile()  # a minute before the next request is due

    world.run(scenario())
    states = world.autoscaler.states("cron")
    raises = [i for i, (_, _, m) in enumerate(states) if m == 1]
    assert len(raises) >= 3
    pins = "".join(str(m) for _, _, m in states)
    assert "111" not in pins  # at most the pre-warm's pin, then the spell's hold: then lowered
    assert pinned_at_request[-5:] == [0] * 5  # the request found a pre-warmed container; a minute on, the pin is gone


def test_a_prewarm_starts_the_cold_start_an_ingress_measured_before_the_request_is_due() -> None:
    """A cron job every 20 minutes whose containers take 100 s to start, as an ingress measured (lead
    60 s): once the pre-warm pays (later than for a typical start: it is kept warm through its gaps
    until then), the reconciler pins its pool 100 s before each request is due."""
    def pinned_before_due(measure: bool) -> list[int]:
        world = World(adaptive())
        ingress = world.ingress("i")
        out: list[int] = []

        async def scenario() -> None:
            start = world.clock.now
            for i in range(30):  # a pre-warm is learned within a few hours
                world.clock.now = start + 1200 * i
                world.request(ingress, "cron")
                if measure and i == 0:
                    ingress.record_cold_start("cron", 100.0)
                await ingress.flush()
                await world.reconciler.reconcile()
                for before_due in (105, 95):
                    world.clock.now = start + 1200 * (i + 1) - before_due
                    await world.reconciler.reconcile()
                    out.append(world.autoscaler.states("cron")[-1][2])

        world.run(scenario())
        return out

    assert pinned_before_due(measure=True)[-6:] == [0, 1] * 3
    assert pinned_before_due(measure=False)[-6:] == [0, 0] * 3  # the configured 60 s: not yet at 145 s


def test_two_windows_the_pools_window_is_the_burst_window_and_min_containers_holds_the_last_one() -> None:
    """A pool whose bursts (3 requests at once, one a container) come back after longer than any window:
    its extra containers go after a minute, its last one is held for the learned hour — Modal's
    scaledown window is the burst window, `min_containers` 1 holds the last container while it runs,
    and is let go once the hour is over. A pool with no container running gets the one window: the
    hold starts no container."""
    world = World(adaptive(modal_concurrent_inputs=1))
    ingress = world.ingress("i")
    name = pool_name(pool_key(REGISTRY.get("e"), None))

    async def beat() -> None:  # the pool's container says it lives (its heartbeat)
        await world.store.put(live_key("model-1"), {"experiment": "e", "pool": name, "at": world.clock.now})

    async def scenario() -> list[tuple[int, int]]:
        gaps = [60, 600, 900, 120, 780]  # irregular: no pre-warm; a burst every 8th request
        for i in range(40):
            n = 3 if i % 8 == 0 else 1
            for _ in range(n):
                ingress.record_request("e")
            world.clock.advance(20)
            for _ in range(n):
                ingress.record_completion("e")
            await beat()
            await ingress.flush()
            await world.reconciler.reconcile()
            world.clock.advance(gaps[i % 5] - 20)
        after_requests = world.autoscaler.states("e")[-1][1:]
        world.clock.advance(3600 - gaps[39 % 5] + 20)  # the last request's hour is over
        await beat()
        await world.reconciler.reconcile()
        hour_over = world.autoscaler.states("e")[-1][1:]
        await world.store.pop(live_key("model-1"))  # the container went: the next request starts one
        ingress.record_request("e")
        world.clock.advance(1)
        ingress.record_completion("e")
        await ingress.flush()
        await world.reconciler.reconcile()
        return [after_requests, hour_over, world.autoscaler.states("e")[-1][1:]]

    after_requests, hour_over, none_running = world.run(scenario())
    assert after_requests == (60, 1)  # extra containers: 1 minute; the last one held
    assert hour_over == (60, 0)
    assert none_running == (3600, 0)  # nothing to hold: the one window, no container started for it


def test_windows_are_reapplied_after_a_deploy_and_not_before() -> None:
    world = World(load_modal_settings(env_file=None))
    ingress = world.ingress("i")

    async def scenario() -> None:
        world.request(ingress, "e")
        await ingress.flush()
        await world.reconciler.reconcile()
        await world.reconciler.reconcile()  # nothing changed: nothing sent
        world.reconciler = world.new_reconciler("deploy-2")  # a deploy reset every override
        await world.reconciler.reconcile()
        await world.reconciler.reconcile()

    world.run(scenario())
    assert [(e, w, m) for _, e, w, m in world.autoscaler.calls] == [("e", 900, 0), ("e", 900, 0)]


def test_a_changed_experiments_old_pool_is_drained_once_even_by_a_restarted_reconciler() -> None:
    world = World(load_modal_settings(env_file=None))
    ingress = world.ingress("i")

    async def scenario() -> None:
        world.request(ingress, "e")
        world.request(ingress, "bursty")
        await ingress.flush()
        await world.reconciler.reconcile()
        await world.registry.put(Experiment(id="e", source="org/other-model", task="feature-extraction"))
        await world.registry.remove("bursty")
        world.reconciler = world.new_reconciler("deploy-1")  # its container was replaced meanwhile
        await world.reconciler.reconcile()
        await world.reconciler.reconcile()  # drained once, then forgotten

    world.run(scenario())
    calls = [(pool.experiment_id, pool.entry["source"], w, m) for pool, w, m in world.autoscaler.pools]
    assert calls == [("e", "org/model", 900, 0), ("bursty", "org/model", 900, 0),
                     ("e", "org/model", 2, 0), ("bursty", "org/model", 2, 0), ("e", "org/other-model", 900, 0)]
    applied = world.run(world.store.get("applied"))
    assert set(applied) == {"e"} and applied["e"]["pool"]["definition"].count("org/other-model") == 1
    assert world.run(world.store.get("activity/bursty")) is None and world.run(world.store.get("activity/e"))


def test_two_ingress_containers_feed_one_reconciler() -> None:
    """Activity seen by another ingress counts: two requests 60 s apart, on two containers, are recent activity."""
    world = World(load_modal_settings(env_file=None))
    first, second = world.ingress("ingress-a"), world.ingress("ingress-b")

    async def scenario() -> None:
        world.request(first, "e")
        world.clock.advance(60)
        world.request(second, "e")
        await second.flush()
        await first.flush()  # published late: still folded in order
        await world.reconciler.reconcile()

    world.run(scenario())
    assert [(e, w) for _, e, w, _ in world.autoscaler.calls] == [("e", 1800)]
    assert world.pokes == 2


def test_what_is_learned_outlives_every_container() -> None:
    """The adaptive policy's histograms live in the shared state: a new reconciler and a new ingress
    container decide from the history the old ones learned."""
    world = World(adaptive())
    old = world.ingress("old")

    async def scenario() -> tuple[Any, Any]:
        for _ in range(10):
            world.request(old, "cron")
            await old.flush()
            await world.reconciler.reconcile()
            world.clock.advance(600)
        world.reconciler = world.new_reconciler("deploy-1")  # its container was replaced
        fresh = world.ingress("new")
        fresh.record_request("cron")
        await asyncio.sleep(0)  # the new ingress takes in the durable activity in the background
        for _ in range(3):
            await asyncio.sleep(0)
        activity = next(a for a in fresh.snapshot() if a.experiment_id == "cron")
        await fresh.flush()
        await world.reconciler.reconcile()
        return activity, policy_from_settings(world.settings).decide(activity)

    activity, decision = world.run(scenario())
    assert activity.learned is not None and activity.learned.gaps >= 9
    assert decision.reason.value == "learned"
    durable = world.run(world.store.get("activity/cron"))
    assert durable["total_requests"] == 11


def test_a_failing_update_is_retried_by_the_next_pass() -> None:
    world = World(load_modal_settings(env_file=None), failures=1)
    ingress = world.ingress("i")

    async def scenario() -> None:
        world.request(ingress, "e")
        await ingress.flush()
        await world.reconciler.reconcile()
        assert world.autoscaler.calls == [] and await world.store.get("applied") in (None, {})
        await world.reconciler.reconcile()

    world.run(scenario())
    assert [(e, w) for _, e, w, _ in world.autoscaler.calls] == [("e", 900)]


def test_the_loop_wakes_for_a_change_due_before_the_next_tick_and_coalesces_pokes() -> None:
    clock = FakeClock(0.0)
    passes: list[float] = []
    due = iter([20.0, None, None, None])

    class Counting:
        async def reconcile(self) -> float | None:
            passes.append(clock.now)
            return next(due)

    loop = ReconcilerLoop(Counting(), interval_s=60, min_gap_s=10, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]

    async def scenario() -> None:
        await loop.tick()  # a change due in 20 s: pass again then
        await asyncio.gather(loop.poke(), loop.poke(), loop.poke())  # three pokes at once: one pass, ≥ 10 s after

    asyncio.run(scenario())
    assert passes[:2] == [0.0, 20.0] and len(passes) == 3 and passes[2] >= 30.0


def test_pokes_never_pile_up_on_the_one_reconciler() -> None:
    """2 pokes a second for 120 s against passes of 3 s, at most one every 10 s (the real loop, time
    scaled 1:100): every poke returns within one pass and the next, never queueing; at most two are in
    flight at once (the one whose pass runs, the one waiting for the next); a poke after the last pass
    started gets a pass of its own."""
    scale = 0.01
    in_flight, most, waited, passes = 0, 0, [], []

    class Slow:
        async def reconcile(self) -> float | None:
            passes.append(time.monotonic())
            await asyncio.sleep(3 * scale)
            return None

    loop = ReconcilerLoop(Slow(), interval_s=60, min_gap_s=10 * scale)  # type: ignore[arg-type]

    async def poke() -> None:
        nonlocal in_flight, most
        most = max(most, in_flight)  # what a new poke finds in flight (it itself returns at once or waits)
        in_flight += 1
        started = time.monotonic()
        await loop.poke()
        waited.append(time.monotonic() - started)
        in_flight -= 1

    began = time.monotonic()

    async def scenario() -> float:
        tasks = []
        for _ in range(240):
            tasks.append(asyncio.create_task(poke()))
            await asyncio.sleep(0.5 * scale)
        last = time.monotonic()
        await asyncio.gather(*tasks)
        return last

    last_poke = asyncio.run(scenario())
    assert most <= 2, f"a poke found {most} others in flight"
    assert max(waited) < 2 * (10 + 3) * scale + 0.5, max(waited)  # this pass and the next, with room for a busy machine
    # at most one pass per 10 s (scaled) of the time the pokes really took: a busy machine stretches the sleeps
    assert 5 <= len(passes) <= (passes[-1] - began) / (10 * scale) + 2, (len(passes), passes[-1] - began)
    assert passes[-1] >= last_poke - 3 * scale, "the last poke's arrivals are read by a pass that started after it"


def test_pokes_merged_into_a_cancelled_waiting_poke_still_get_their_pass() -> None:
    passes: list[float] = []

    class Slow:
        async def reconcile(self) -> float | None:
            passes.append(time.monotonic())
            await asyncio.sleep(0.05)
            return None

    loop = ReconcilerLoop(Slow(), interval_s=60, min_gap_s=0.0)  # type: ignore[arg-type]

    async def scenario() -> None:
        running = asyncio.create_task(loop.poke())
        await asyncio.sleep(0.01)  # its pass runs
        waiting = asyncio.create_task(loop.poke())
        await asyncio.sleep(0)
        await loop.poke()  # merged into the waiting one: returns at once
        waiting.cancel()  # the input of the waiting poke is cancelled
        await running
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert len(passes) == 2, "the merged poke's arrivals got a pass of their own"


def test_the_same_plan_drives_the_ray_emulator() -> None:
    """For the same decision and idle time, the replicas the Ray policy keeps are the containers the
    reconciler's autoscaler state keeps on Modal: pinned ones, and idle ones inside the window."""
    now = 50_000.0
    for window_s, prewarm_s, burst_s in [(900, None, None), (300, 1200, None), (900, None, 120)]:
        decision = WindowDecision(window_s, WindowReason.LEARNED, "", prewarm_after_s=prewarm_s, burst_window_s=burst_s)
        for idle in [0.5, 100.0, 899.0, 901.0, 1100.0, 1150.0, 1499.0, 1501.0, 3000.0]:
            state = pool_state(window_s, prewarm_s, idle, lead_s=60, burst_window_s=burst_s)
            plan = plan_for("e", decision, idle, lead_s=60)
            report = ReplicaReport(now - idle, 0, served=True)
            running = desired_replicas(ScalingInputs(now, [report], 0, 8, 1.0, 10, plan=plan, current=1)).replicas
            scaled_to_zero = desired_replicas(ScalingInputs(now, [], 0, 8, 1.0, 10, plan=plan)).replicas
            # a pool at zero: a pre-warm's pin starts a container, two windows' hold starts none (as on Modal)
            assert scaled_to_zero == (0 if plan.holds_only else state.min_containers), (window_s, prewarm_s, idle)
            assert running == max(state.min_containers, int(idle < state.scaledown_window_s)), (window_s, prewarm_s, idle)


def test_a_warm_schedule_pins_its_pool_through_its_hours_with_no_request_at_all() -> None:
    """An experiment never requested, warm on weekdays 09:00–18:00 in Berlin (2 containers): the
    reconciler pins its pool from the lead (60 s) before 09:00, asks to be woken for each change,
    lets it go at 18:00, and does nothing on Saturday; with the schedule removed, the pin goes too."""
    from datetime import datetime

    from core.keepwarm.warm_schedule import WarmWindow

    world = World(adaptive())
    office = Experiment(id="office", source="org/model", task="feature-extraction",
                        warm=(WarmWindow(days="mon-fri", hours="09:00-18:00", containers=2, timezone="Europe/Berlin"),))
    world.run(world.registry.put(office))

    def pass_at(iso: str) -> tuple[int | None, float | None]:
        world.clock.now = datetime.fromisoformat(iso).timestamp()
        due = world.run(world.reconciler.reconcile())
        states = world.autoscaler.states("office")
        return (states[-1][2] if states else None), due

    assert pass_at("2026-12-07T07:58:00+00:00") == (0, 60.0)  # Monday 08:58 Berlin: due at 08:59
    assert pass_at("2026-12-07T07:59:00+00:00") == (2, 9 * 3600.0 + 60)  # the lead before 09:00: pinned until 18:00
    assert pass_at("2026-12-07T12:00:00+00:00")[0] == 2
    assert pass_at("2026-12-07T17:00:00+00:00")[0] == 0  # 18:00 in Berlin
    assert pass_at("2026-12-12T10:00:00+00:00")[0] == 0  # Saturday
    world.clock.now = datetime.fromisoformat("2026-12-14T10:00:00+00:00").timestamp()  # Monday again
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("office")[-1][2] == 2
    world.run(world.registry.put(office.model_copy(update={"warm": None})))  # the schedule removed
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("office")[-1][2] == 0

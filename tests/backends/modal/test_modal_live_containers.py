"""The deployment's container cap on Modal (MODAL_MAX_CONTAINERS): model containers' heartbeats in the
shared state (a strict stand-in for `modal.Dict`), the ingress's admission of cold starts, and the
reconciler's share of the free slots per pool — on a fake clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from backends.modal_backend.live_containers import STALE_S, Heartbeat, LiveContainers, pool_name, running_containers
from backends.modal_backend.pools import PoolKey, pool_key
from backends.modal_backend.settings import load_modal_settings
from backends.modal_backend.state_store import ModalDictStore, live_key, starting_key
from core.keepwarm.container_budget import ContainerBudget
from core.serving.errors import Overloaded
from core.serving.registry import Experiment
from tests.backends.modal.modal_harness import StrictDict, _Aio
from tests.backends.modal.test_modal_reconciler import World
from tests.conftest import FakeClock


def pool(experiment_id: str) -> PoolKey:
    return pool_key(Experiment(id=experiment_id, source="org/model", task="feature-extraction"), None)


def beat(store: ModalDictStore, container: str, experiment_id: str, at: float) -> None:
    """A container's record as its heartbeat writes it (the thread itself: `test_a_heartbeat_...`)."""
    asyncio.run(store.put(live_key(container), {"experiment": experiment_id, "pool": pool_name(pool(experiment_id)), "at": at}))


def test_a_heartbeat_writes_at_start_and_on_its_interval_and_its_stop_removes_the_record() -> None:
    store = ModalDictStore(StrictDict())
    heartbeat = Heartbeat(store, "c1", pool("a"), interval_s=0.05)
    heartbeat.start()
    deadline = time.monotonic() + 5
    while asyncio.run(store.get(live_key("c1"))) is None:
        assert time.monotonic() < deadline, "no first beat"
        time.sleep(0.01)
    first = asyncio.run(store.get(live_key("c1")))["at"]
    time.sleep(0.3)
    assert asyncio.run(store.get(live_key("c1")))["at"] > first  # it beats on
    asyncio.run(heartbeat.stop())
    assert asyncio.run(store.keys()) == []
    time.sleep(0.15)
    assert asyncio.run(store.keys()) == []  # no beat after the stop brings it back


def test_a_container_gone_without_its_exit_hook_stops_counting_and_the_reconciler_removes_it() -> None:
    store, now = ModalDictStore(StrictDict()), 10_000.0
    beat(store, "c1", "a", now - 10)
    beat(store, "c2", "a", now - STALE_S - 1)  # killed: it stopped beating
    beat(store, "c3", "b", now)
    asyncio.run(store.put(starting_key("ingress-1"), {pool_name(pool("c")): now - 5, pool_name(pool("d")): now - 400}))
    asyncio.run(store.put(starting_key("ingress-2"), {pool_name(pool("d")): now - 400}))  # nothing recent
    keys = asyncio.run(store.keys())
    # 'c' is starting (let through 5 s ago, not beating yet); 'd''s start is older than the 300 s limit
    expected = {pool_name(pool("a")): 1, pool_name(pool("b")): 1, pool_name(pool("c")): 1}
    assert asyncio.run(running_containers(store, keys, now, 300)).running() == expected
    assert live_key("c2") in asyncio.run(store.keys())  # the ingress only reads
    asyncio.run(running_containers(store, keys, now, 300, drop_stale=True))
    assert sorted(asyncio.run(store.keys())) == [live_key("c1"), live_key("c3"), starting_key("ingress-1")]


class SlowDict(StrictDict):
    """The Dict a network hop away: every call waits `delay_s` first, yielding to the event loop
    (`broken`: then fails)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s, self.broken, self.calls = delay_s, False, 0
        inner = {name: getattr(self, name).aio for name in ("get", "put", "pop", "keys")}

        async def hop() -> None:
            self.calls += 1
            await asyncio.sleep(self.delay_s)
            if self.broken:
                raise ConnectionError("the Dict is unreachable")

        def call(name: str) -> Any:
            async def method(*args: Any, **kwargs: Any) -> Any:
                await hop()
                return await inner[name](*args, **kwargs)
            return method

        async def keys() -> Any:
            await hop()
            async for key in inner["keys"]():
                yield key

        self.get, self.put, self.pop, self.keys = _Aio(call("get")), _Aio(call("put")), _Aio(call("pop")), _Aio(keys)


def test_the_ingress_refuses_a_cold_start_while_every_slot_is_held_and_counts_those_it_let_through() -> None:
    """Cap 3: 'a' runs 2. 'b' is let through (one slot free) and published for the reconciler; 'c' —
    asked before b's container beats — is refused: b's cold start holds the last slot. Once a's
    containers are gone, 'c' is let through."""
    clock, store = FakeClock(10_000.0), ModalDictStore(StrictDict())
    beat(store, "a1", "a", clock.now)
    beat(store, "a2", "a", clock.now)
    live = LiveContainers(store, ContainerBudget(3, 3), starting_s=300, grants_s=180, container="i1", ttl_s=2,
                          clock=clock)

    async def scenario() -> None:
        await live.admit(pool("a"))  # running: always served
        await live.admit(pool("b"))
        with pytest.raises(Overloaded) as refused:
            await live.admit(pool("c"))
        assert refused.value.retry_after_s == 30 and "all 3 containers of the deployment (MODAL_MAX_CONTAINERS)" in str(refused.value)
        await live.admit(pool("b"))  # its own cold start under way: not a second slot
        assert await live.running() == {pool_name(pool("a")): 2, pool_name(pool("b")): 1}
        await asyncio.sleep(0.01)  # the published list is written in the background
        assert set(await store.get(starting_key("i1"))) == {pool_name(pool("b"))}
        clock.advance(3)  # a new reading (with this ingress's own published list in it): b still holds its slot
        with pytest.raises(Overloaded):
            await live.admit(pool("c"))
        clock.advance(STALE_S + 1)  # a's containers stopped beating (and b's start still counts)
        await live.admit(pool("c"))
        await live.admit(pool("d"))
        clock.advance(3)  # read again: b, c and d hold the three slots, none of them beating yet
        with pytest.raises(Overloaded):
            await live.admit(pool("e"))
        assert set(await live.running()) == {pool_name(pool(x)) for x in "bcd"}
        assert set(await store.get(starting_key("i1"))) == {pool_name(pool(x)) for x in "bcd"}

    asyncio.run(scenario())


def test_slots_granted_to_a_busy_pool_are_held_against_cold_starts_and_an_idle_pools_are_not() -> None:
    """Cap 3, 'a' runs 1 and was granted 3 by the reconciler's last pass (it may grow there without
    asking anyone). While a's requests under way need 3 containers, a cold 'b' is refused; once they need
    one, b is let through; a grant from a reconciler that stopped passing holds nothing."""
    clock, store = FakeClock(10_000.0), ModalDictStore(StrictDict())
    beat(store, "a1", "a", clock.now)
    asyncio.run(store.put("grants", {"at": clock.now, "pools": {pool_name(pool("a")): 3, pool_name(pool("c")): 1}}))
    need = {pool_name(pool("a")): 3}
    live = LiveContainers(store, ContainerBudget(3, 3), starting_s=300, grants_s=180, demand=lambda p: need.get(p, 0),
                          clock=clock)

    async def scenario() -> None:
        with pytest.raises(Overloaded):
            await live.admit(pool("b"))
        await live.admit(pool("c"))  # a slot granted to c itself: its cold start's
        need[pool_name(pool("a"))] = 1
        await live.admit(pool("b"))  # a, c and b: the three slots
        need[pool_name(pool("a"))] = 3
        clock.advance(181)  # the grants are old: the reconciler stopped passing
        await store.put(live_key("a1"), {"experiment": "a", "pool": pool_name(pool("a")), "at": clock.now})
        assert await live.running() == {pool_name(pool(x)): 1 for x in "abc"}

    asyncio.run(scenario())


def test_sixty_four_cold_requests_at_once_start_no_more_than_the_free_slots() -> None:
    """64 clients, each for an experiment of its own, at once, with every Dict call yielding to the
    others: exactly the free slots are let through."""
    clock, store = FakeClock(10_000.0), ModalDictStore(SlowDict(delay_s=0.01))
    beat(store, "a1", "a", clock.now)
    live = LiveContainers(store, ContainerBudget(5, 5), starting_s=300, grants_s=180, clock=clock)

    async def one(i: int) -> bool:
        try:
            await live.admit(pool(f"e{i}"))
            return True
        except Overloaded:
            return False

    async def scenario() -> list[bool]:
        return list(await asyncio.gather(*(one(i) for i in range(64))))

    assert sum(asyncio.run(scenario())) == 4


def test_an_unreachable_shared_state_never_holds_up_a_warm_request_and_is_tried_again_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Dict hanging or failing: a running pool's requests go on at once on the last reading; a cold
    one waits for a reading at most READ_TIMEOUT_S, then the last reading decides; a failed reading is
    tried again after `ttl_s`, not by every request."""
    from backends.modal_backend import live_containers

    monkeypatch.setattr(live_containers, "READ_TIMEOUT_S", 0.3)
    clock, slow = FakeClock(10_000.0), SlowDict()
    store = ModalDictStore(slow)
    beat(store, "a1", "a", clock.now)
    live = LiveContainers(store, ContainerBudget(1, 1), starting_s=300, grants_s=180, ttl_s=2, clock=clock)

    async def scenario() -> None:
        await live.admit(pool("a"))  # the first reading: 'a' runs and holds the one slot
        clock.advance(3)
        slow.delay_s = 60.0  # every call hangs from here on
        await live.admit(pool("a"))  # starts a new reading in the background...
        await asyncio.sleep(0.05)  # ...which hangs
        started = time.monotonic()
        for _ in range(20):
            await live.admit(pool("a"))  # warm: never waits for it
        assert time.monotonic() - started < 0.2
        with pytest.raises(Overloaded):  # cold: one bounded wait, then the last reading decides
            await live.admit(pool("b"))
        assert 0.3 <= time.monotonic() - started < 5
        slow.delay_s, slow.broken = 0.0, True  # now it fails at once
        live._reading.cancel()  # type: ignore[union-attr]  (the hanging reading ends)
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):  # a reading tried now, failed: the last good one decides
            await live.admit(pool("b"))
        calls = slow.calls
        for _ in range(10):
            with pytest.raises(Overloaded):
                await live.admit(pool("b"))
        assert slow.calls == calls  # backed off: tried again only after ttl_s
        clock.advance(3)
        with pytest.raises(Overloaded):
            await live.admit(pool("b"))
        assert slow.calls == calls + 1

    asyncio.run(scenario())


def test_the_reconciler_shares_the_free_slots_among_recent_pools_within_the_cap() -> None:
    """Cap 4 for the deployment: 'bursty' runs 2 containers, 'cron' 1; both had requests. Each pool's
    max_containers is what it runs plus its share of the one free slot (the most recent gets it); 'e',
    quiet, gets Modal's least, 1 (granted nothing: the ingress keeps it at zero)."""
    world = World(load_modal_settings(env_file=None, max_containers=4))
    ingress = world.ingress("i")
    world.request(ingress, "e")
    world.clock.advance(400)  # 'e' is no longer recent (MODAL_ACTIVITY_WINDOW 300 s)
    world.request(ingress, "cron")
    world.request(ingress, "bursty")  # the most recent
    for name, experiment in (("b1", "bursty"), ("b2", "bursty"), ("c1", "cron")):
        beat(world.store, name, experiment, world.clock.now)
    world.run(ingress.flush())
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.max_containers == {"bursty": 3, "cron": 1, "e": 1}
    world.clock.advance(STALE_S + 1)  # every container gone: the slots are free again
    world.request(ingress, "cron")
    world.run(ingress.flush())
    world.run(world.reconciler.reconcile())
    # nothing runs: each recent pool gets room for one (to double from there next pass); 2 stay free
    assert world.autoscaler.max_containers == {"bursty": 1, "cron": 1, "e": 1}
    grants = world.run(world.store.get("grants"))["pools"]
    assert sorted(grants.values()) == [0, 1, 1] and grants[pool_name(pool("e"))] == 0
    assert not [k for k in world.run(world.store.keys()) if k.startswith("live/")]  # the dead ones' records removed


def test_a_prewarm_takes_a_free_slot_or_waits_for_one() -> None:
    """A pre-warm starts a container no ingress admitted: with every slot held it waits
    (min_containers 0), and it pins one as soon as a slot is free."""
    from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason

    world = World(load_modal_settings(env_file=None, max_containers=1))
    world.reconciler.autoscalers.policy = NamedPolicy(
        "learned", lambda a: WindowDecision(60, WindowReason.LEARNED, "", prewarm_after_s=600))
    ingress = world.ingress("i")
    world.request(ingress, "cron")
    world.run(ingress.flush())
    world.clock.advance(600 - 30)  # the pre-warm is due (its lead is inside the next 60 s)
    beat(world.store, "o1", "bursty", world.clock.now)  # another experiment holds the one slot
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("cron")[-1][2] == 0  # waits
    world.clock.advance(STALE_S + 1)  # that container is gone
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("cron")[-1][2] == 1 and world.autoscaler.max_containers["cron"] == 1


def test_a_prewarm_of_a_wide_experiment_pins_its_width_within_the_free_slots() -> None:
    """Three requests at once (one a container): the pre-warm brings back three — as many as the
    deployment's free slots allow, the rest as slots free up."""
    from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason

    world = World(load_modal_settings(env_file=None, max_containers=3, policy_name="adaptive", modal_concurrent_inputs=1))
    learner = world.reconciler.autoscalers.policy.learner
    world.reconciler.autoscalers.policy = NamedPolicy(
        "learned", lambda a: WindowDecision(60, WindowReason.LEARNED, "", prewarm_after_s=600), learner)
    ingress = world.ingress("i")
    for _ in range(3):
        ingress.record_request("cron")
    world.clock.advance(5)
    for _ in range(3):
        ingress.record_completion("cron")
    world.run(ingress.flush())
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("cron")[-1][2] == 3  # the spell's width, held the minute after the requests
    world.clock.advance(61)
    world.run(world.reconciler.reconcile())  # the wake-up the plan asked for: the minute is over
    assert world.autoscaler.states("cron")[-1][2] == 0
    world.clock.advance(600 - 30 - 61)  # the pre-warm is due (its lead is inside the next 60 s)
    beat(world.store, "o1", "bursty", world.clock.now)  # another experiment holds one of the three slots
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("cron")[-1][2] == 2  # two of three now ...
    world.clock.advance(STALE_S + 1)  # that container is gone
    world.run(world.reconciler.reconcile())
    assert world.autoscaler.states("cron")[-1][2] == 3  # ... the third when its slot is free


def test_the_ingress_knows_each_experiments_requests_under_way_for_its_demand() -> None:
    world = World(load_modal_settings(env_file=None))
    ingress = world.ingress("i")
    ingress.record_request("a")
    ingress.record_request("a")
    ingress.record_completion("a")
    assert (ingress.in_flight("a"), ingress.in_flight("never-seen")) == (1, 0)

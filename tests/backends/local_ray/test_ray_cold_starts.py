"""The bound on cold starts in flight (backends/local_ray/cold_starts.py), on a real event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

import pytest

from backends.local_ray.admission import Admission
from backends.local_ray.cold_starts import ColdStarts, NoStartSlot
from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.replica_slots import ReplicaSlots
from backends.local_ray.replica_watch import ReplicaWatch
from backends.local_ray.settings import load_ray_settings
from core.serving.registry import Experiment


async def _start(starts: ColdStarts, experiment: str, log: list[str], done: asyncio.Event, cold: bool = True) -> None:
    async with starts.admit(experiment, cold, timeout_s=5):
        log.append(experiment)
        await done.wait()


def test_at_most_limit_experiments_start_at_once_the_rest_wait_their_turn() -> None:
    async def scenario() -> None:
        starts, log = ColdStarts(2), []
        done = {e: asyncio.Event() for e in "abc"}
        tasks = [asyncio.create_task(_start(starts, e, log, done[e])) for e in "abc"]
        await asyncio.sleep(0.05)
        assert log == ["a", "b"] and starts.starting == ["a", "b"]
        done["a"].set()
        await asyncio.sleep(0.05)
        assert log == ["a", "b", "c"] and starts.starting == ["b", "c"]
        for event in done.values():
            event.set()
        await asyncio.gather(*tasks)
        assert starts.starting == []

    asyncio.run(scenario())


def test_requests_for_an_experiment_already_starting_follow_it_without_a_slot() -> None:
    async def scenario() -> None:
        starts, log, done = ColdStarts(1), [], asyncio.Event()
        tasks = [asyncio.create_task(_start(starts, "a", log, done)) for _ in range(4)]
        other = asyncio.create_task(_start(starts, "b", log, asyncio.Event()))
        await asyncio.sleep(0.05)
        assert log == ["a"] * 4  # all four ride the one start; b waits for the slot
        done.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.01)
        assert log[-1] == "b"
        other.cancel()

    asyncio.run(scenario())


def test_warm_experiments_pass_while_every_slot_is_taken() -> None:
    async def scenario() -> None:
        starts, log, hold = ColdStarts(1), [], asyncio.Event()
        starting = asyncio.create_task(_start(starts, "a", log, hold))
        await asyncio.sleep(0.01)
        await _start(starts, "warm", log, _set(asyncio.Event()), cold=False)
        assert log == ["a", "warm"]
        hold.set()
        await starting

    asyncio.run(scenario())


def test_a_slot_frees_when_the_first_request_of_a_start_ends_even_under_continuing_traffic() -> None:
    async def scenario() -> None:
        starts, log = ColdStarts(1), []
        first, second = asyncio.Event(), asyncio.Event()
        a1 = asyncio.create_task(_start(starts, "a", log, first))
        await asyncio.sleep(0.01)
        a2 = asyncio.create_task(_start(starts, "a", log, second))  # still going when a1 ends
        b = asyncio.create_task(_start(starts, "b", log, _set(asyncio.Event())))
        first.set()
        await asyncio.sleep(0.05)
        assert log == ["a", "a", "b"]  # b started while a2 still ran
        second.set()
        await asyncio.gather(a1, a2, b)
        assert starts.starting == []

    asyncio.run(scenario())


def test_a_cancelled_or_failed_request_hands_its_turn_on() -> None:
    async def scenario() -> None:
        starts, log, hold = ColdStarts(1), [], asyncio.Event()
        holder = asyncio.create_task(_start(starts, "a", log, hold))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(_start(starts, "b", log, asyncio.Event()))
        await asyncio.sleep(0.01)
        waiting.cancel()  # the client went away while b waited
        with pytest.raises(asyncio.CancelledError):
            await waiting

        async def failing() -> None:
            async with starts.admit("c", True, timeout_s=5):
                raise RuntimeError("model failed to load")

        hold.set()
        await holder
        with pytest.raises(RuntimeError):
            await failing()
        assert starts.starting == []
        await _start(starts, "d", log, _set(asyncio.Event()))  # the slot is free again
        assert log == ["a", "d"]

    asyncio.run(scenario())


def test_a_request_that_cannot_get_a_slot_in_time_gets_no_start_slot() -> None:
    async def scenario() -> None:
        starts, hold = ColdStarts(1), asyncio.Event()
        holder = asyncio.create_task(_start(starts, "a", [], hold))
        await asyncio.sleep(0.01)
        with pytest.raises(NoStartSlot, match="1 cold starts"):
            async with starts.admit("b", True, timeout_s=0.05):
                pass
        hold.set()
        await holder
        assert starts.starting == []

    asyncio.run(scenario())


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


def _admission(deploy: Callable[[Experiment, "str | None"], None], delete: Callable[[str], None] = lambda e: None) -> Admission:
    """The Ray ingress's admission with one cold start at a time; Serve's deploy and delete are the fakes."""

    async def same(experiment: Experiment) -> Experiment:
        return experiment

    deployer = PoolDeployer(load_ray_settings(env_file=None), "app", same, deploy=deploy, delete=delete)
    return Admission(5.0, publish=lambda e: asyncio.sleep(0), replicas=ReplicaWatch("app", read_states=lambda app: {}),
                     slots=ReplicaSlots(0), starts=ColdStarts(1), deployer=deployer, identity=lambda e: None)


def _experiment(experiment_id: str) -> Experiment:
    return Experiment(id=experiment_id, source="./x", task="feature-extraction")


def test_pools_deploy_at_once_while_their_replicas_take_turns() -> None:
    """Ten cold experiments on a two-core machine: a pool deployed at zero replicas starts nothing until
    its request reaches it, so every deploy overlaps; only the replica starts wait for a turn."""

    async def scenario() -> None:
        all_deploying = threading.Barrier(4, timeout=5)  # three deploys on worker threads, and this test
        deployed: list[str] = []

        def deploy(experiment: Experiment, identity: str | None) -> None:
            all_deploying.wait()  # returns only once all three deploys are under way at once
            deployed.append(experiment.id)

        admission = _admission(deploy)
        calls, release = [], asyncio.Event()

        async def call(request_at: float, left_s: float) -> None:
            calls.append(admission.starts.starting)
            await release.wait()

        tasks = [asyncio.create_task(admission.run(_experiment(e), call)) for e in "abc"]
        await asyncio.to_thread(all_deploying.wait)
        await asyncio.sleep(0.1)
        assert sorted(deployed) == ["a", "b", "c"]
        assert len(calls) == 1 and len(calls[0]) == 1  # one replica start at a time
        release.set()
        await asyncio.gather(*tasks)
        assert len(calls) == 3 and admission.starts.starting == []

    asyncio.run(scenario())


def test_a_pool_parked_while_its_request_waits_for_a_turn_is_deployed_again_before_the_request_goes() -> None:
    """A turn may take longer than HYBRID_IDLE_POOL_TTL_S: the idle pools' sweep deletes the pool deployed
    ahead of it meanwhile, and the request must not meet a deleted pool."""

    async def scenario() -> None:
        serve: dict[str, int] = {}

        def deploy(experiment: Experiment, identity: str | None) -> None:
            serve[experiment.id] = serve.get(experiment.id, 0) + 1

        admission = _admission(deploy, delete=lambda experiment_id: serve.pop(experiment_id))
        release, met = asyncio.Event(), []

        async def call(request_at: float, left_s: float) -> None:
            met.append(dict(serve))
            await release.wait()

        first = asyncio.create_task(admission.run(_experiment("a"), call))
        waiting = asyncio.create_task(admission.run(_experiment("b"), call))
        await asyncio.sleep(0.1)
        assert len(met) == 1 and serve == {"a": 1, "b": 1}  # b deployed, waiting for its turn
        assert admission.deployer.park("b")
        await admission.deployer.settle()
        assert "b" not in serve
        release.set()
        await asyncio.gather(first, waiting)
        assert met[1] == {"a": 1, "b": 1} and admission.deployer.deployed("b")  # deployed again before its call

    asyncio.run(scenario())

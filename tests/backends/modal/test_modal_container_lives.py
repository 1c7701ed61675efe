"""Modal containers' lives in the cost ledger: each container publishes its own record under its own key
(the shared state's one-writer rule), the ingress sums them per experiment. The Dict is the strict
stand-in at the network call (values pickled, as Modal does)."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.modal_backend.container_lives import PUBLISH_S, ContainerLife, UsageReader, process_started_at, usage_key
from backends.modal_backend.state_store import ModalDictStore
from core.keepwarm.ledger import ContainerState as S
from tests.backends.modal.modal_harness import StrictDict

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def test_two_containers_of_one_experiment_publish_apart_and_are_read_together(monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = ModalDictStore(StrictDict()), Clock()

    async def scenario() -> dict:
        lives = []
        for task in ("ta-1", "ta-2"):
            monkeypatch.setenv("MODAL_TASK_ID", task)
            lives.append(ContainerLife("e", store, started_at=clock.t, clock=clock))
        clock.t += 4  # both loaded their model in 4 s
        for life in lives:
            life.ready()
        with lives[0].serving():
            clock.t += 1
        await lives[0].publish_due()  # its first request: published
        clock.t += 1
        with lives[0].serving():
            clock.t += 1
        await lives[0].publish_due()  # 2 s later: not due yet
        first = (await store.get(usage_key("e", "ta-1")))["total"]
        clock.t += 10
        await lives[0].stopped()
        await lives[1].stopped()
        return first

    first = asyncio.run(scenario())
    assert first == {"cold_start": 4, "busy": 1, "warm_idle": 0, "prewarmed": 0}  # as of its first publication
    assert set(asyncio.run(store.keys())) == {usage_key("e", "ta-1"), usage_key("e", "ta-2")}
    usage = asyncio.run(UsageReader(store, clock=clock).usage())
    record = usage["e"]
    assert record.containers == 0 and record.as_of == clock.t
    assert record.total == {S.COLD_START: 8, S.BUSY: 2, S.WARM_IDLE: 11 + 13, S.PREWARMED: 0}


def test_the_reader_reads_the_shared_state_at_most_every_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = ModalDictStore(StrictDict()), Clock()
    reader = UsageReader(store, ttl_s=5.0, clock=clock)
    assert asyncio.run(reader.usage()) == {}
    life = ContainerLife("e", store, started_at=clock.t, clock=clock)
    life.ready()
    asyncio.run(life.stopped())
    assert asyncio.run(reader.usage()) == {}  # read 0 s ago
    clock.t += 5
    assert set(asyncio.run(reader.usage())) == {"e"}


def test_a_publication_that_fails_loses_nothing_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = ModalDictStore(StrictDict())
    life = ContainerLife("e", store, started_at=clock.t, clock=clock)

    async def unreachable(key: str, value: object) -> None:
        raise ConnectionError("Dict unreachable")

    monkeypatch.setattr(store, "put", unreachable)
    life.ready()
    asyncio.run(life.publish())  # logged, not raised
    monkeypatch.undo()
    clock.t += PUBLISH_S
    asyncio.run(life.publish_due())
    value = asyncio.run(store.get(usage_key("e", life.container)))
    assert value is not None and value["total"]["warm_idle"] == PUBLISH_S


def test_this_process_knows_when_it_started() -> None:
    started = process_started_at()
    assert started is not None and started <= time.time() and time.time() - started < 24 * 3600


def test_a_damaged_record_hides_itself_only_and_a_stopped_containers_record_is_read_once() -> None:
    store, clock = ModalDictStore(StrictDict()), Clock()
    life = ContainerLife("e", store, started_at=clock.t, clock=clock)
    life.ready()
    clock.t += 3
    asyncio.run(life.stopped())
    asyncio.run(store.put("usage/e/damaged", {"total": "not a record"}))
    reader = UsageReader(store, ttl_s=0.0, clock=clock)
    first = asyncio.run(reader.usage())
    assert sum(first["e"].total.values()) == 3
    gets = []
    real_get = store.get

    async def counting_get(key: str) -> object:
        gets.append(key)
        return await real_get(key)

    store.get = counting_get  # type: ignore[method-assign]
    again = asyncio.run(reader.usage())
    assert sum(again["e"].total.values()) == 3 and usage_key("e", life.container) not in gets  # final: not read again

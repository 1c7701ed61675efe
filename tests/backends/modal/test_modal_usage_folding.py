"""The reconciler folds stopped containers' ledger records into one total per experiment: nothing is
lost or counted twice (also by an ingress that listed the keys just before a fold), the container keys
do not pile up, and the totals outlive modal's 7-day expiry of untouched Dict entries — on a fake
Dict that expires entries by that rule."""

from __future__ import annotations

import asyncio

import pytest

from backends.modal_backend.container_lives import ContainerLife, UsageReader, usage_key
from backends.modal_backend.state_store import ModalDictStore
from backends.modal_backend.usage_folding import REFRESH_S, fold_usage, total_key
from core.keepwarm.ledger import ContainerState as S
from tests.backends.modal.modal_harness import StrictDict
from tests.backends.modal.test_modal_container_lives import Clock

DAY = 86400.0


def stopped_container(store: ModalDictStore, clock: Clock, task: str, monkeypatch: pytest.MonkeyPatch,
                      busy_s: float = 1.0, experiment: str = "e") -> None:
    monkeypatch.setenv("MODAL_TASK_ID", task)
    life = ContainerLife(experiment, store, started_at=clock.t, clock=clock)
    clock.t += 2  # its cold start
    life.ready()
    with life.serving():
        clock.t += busy_s
    clock.t += 3  # warm-idle, then it stops
    asyncio.run(life.stopped())


def test_folding_keeps_every_second_once_and_drops_the_container_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = ModalDictStore(StrictDict(clock=clock))
    for task in ("ta-1", "ta-2"):
        stopped_container(store, clock, task, monkeypatch)
    monkeypatch.setenv("MODAL_TASK_ID", "ta-3")
    running = ContainerLife("e", store, started_at=clock.t, clock=clock)
    running.ready()
    with running.serving():
        clock.t += 1
    asyncio.run(running.publish_due())
    before = asyncio.run(UsageReader(store, clock=clock).usage())["e"]
    assert asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t)) == 2
    keys = set(asyncio.run(store.keys()))
    assert keys == {usage_key("e", "ta-3"), total_key("e")}, "the running container's key stays; the stopped ones go"
    after = asyncio.run(UsageReader(store, clock=clock).usage())["e"]
    assert after.total == before.total and after.containers == 1
    assert after.total[S.COLD_START] == 4 and after.total[S.BUSY] == 3  # two 2 s starts; the third was ready at once
    assert asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t)) == 0  # nothing new to fold


def test_a_reader_that_listed_the_keys_before_a_fold_counts_nothing_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = ModalDictStore(StrictDict(clock=clock))
    stopped_container(store, clock, "ta-1", monkeypatch)
    expected = asyncio.run(UsageReader(store, clock=clock).usage())["e"].total
    stale = asyncio.run(store.keys())
    asyncio.run(fold_usage(store, stale, clock.t))
    listed = list(stale) + [total_key("e")]  # the listing raced the fold: the old key and the new total

    async def keys() -> list[str]:
        return listed

    monkeypatch.setattr(store, "keys", keys)
    assert asyncio.run(UsageReader(store, clock=clock).usage())["e"].total == expected


def test_totals_outlive_the_dicts_seven_day_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    dict_ = StrictDict(clock=clock)
    store = ModalDictStore(dict_)
    stopped_container(store, clock, "ta-1", monkeypatch, busy_s=5.0)
    asyncio.run(store.put("untouched", 1))
    asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t))
    for _ in range(int(30 * DAY / 3600)):  # a quiet month, a reconciler pass every hour, nobody reads usage
        clock.t += 3600
        asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t))
    keys = set(asyncio.run(store.keys()))
    assert "untouched" not in keys, "the fake Dict expires what nobody touched for 7 days, as modal does"
    assert total_key("e") in keys
    usage = asyncio.run(UsageReader(store, clock=clock).usage())["e"]
    assert usage.total[S.BUSY] == 5.0 and usage.minutes == {}  # minute buckets age out; the totals stay
    assert REFRESH_S < 7 * DAY


def test_a_record_that_cannot_be_read_is_left_for_the_next_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = ModalDictStore(StrictDict(clock=clock))
    stopped_container(store, clock, "ta-1", monkeypatch)
    asyncio.run(store.put(usage_key("e", "ta-broken"), {"not": "a record"}))
    assert asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t)) == 1
    assert usage_key("e", "ta-broken") in asyncio.run(store.keys())


def test_a_pop_that_failed_after_the_total_was_written_is_not_counted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = ModalDictStore(StrictDict(clock=clock))
    stopped_container(store, clock, "ta-1", monkeypatch, busy_s=4.0)
    expected = asyncio.run(UsageReader(store, clock=clock).usage())["e"].total
    real_pop = store.pop

    async def failing_pop(key: str) -> object:
        raise ConnectionError("the network dropped the delete")

    monkeypatch.setattr(store, "pop", failing_pop)
    asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t))  # the total is written, the pop fails
    assert usage_key("e", "ta-1") in asyncio.run(store.keys())
    monkeypatch.setattr(store, "pop", real_pop)
    clock.t += 60
    assert asyncio.run(fold_usage(store, asyncio.run(store.keys()), clock.t)) == 0, "already in the total"
    assert set(asyncio.run(store.keys())) == {total_key("e")}, "the leftover key is deleted"
    assert asyncio.run(UsageReader(store, clock=clock).usage())["e"].total == expected

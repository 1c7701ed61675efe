"""A pool's replicas in the cost ledger as the scaling policy sees them, tick by tick (no Ray: the
policy's view is scripted; the GCS key-value store is the shared fake at the network call)."""

from __future__ import annotations

import pytest

from backends.local_ray.replica_lives import PUBLISH_S, ReplicaLives
from backends.local_ray.scaling import ReplicaReport
from backends.local_ray.usage_store import UsageStore
from core.keepwarm.ledger import ContainerState as S, UsageRecord
from tests.backends.local_ray.conftest import FakeGcs

T0 = 1_800_000_000.0


def fresh() -> tuple[UsageStore, ReplicaLives]:
    """A GCS store of the application and experiment e's policy view, at T0."""
    store = UsageStore("app")
    return store, ReplicaLives("e", store, clock=lambda: T0)


def report(replica: str, ready_at: float, busy_s: float = 0.0, in_flight: int = 0, served: bool = False,
           started_at: float | None = None) -> ReplicaReport:
    return ReplicaReport(ready_at, in_flight, served, False, replica=replica, started_at=started_at, ready_at=ready_at,
                         busy_s=busy_s)


def test_a_replica_started_for_a_request_is_cold_then_busy_then_idle_until_it_leaves(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0, [], [], target=1, prewarm=False)  # Serve's cold start: one starting, none running
    lives.observe(T0 + 3.5, ["r1"], [report("r1", ready_at=T0 + 3.0, busy_s=0.5, served=True)], 1, False)
    lives.observe(T0 + 10, ["r1"], [report("r1", ready_at=T0 + 3.0, busy_s=1.5, served=True)], 1, False)
    lives.observe(T0 + 20, [], [], 0, False)  # scaled to zero
    record = store.read("e")
    assert record.total == {S.COLD_START: 3.0, S.BUSY: 1.5, S.WARM_IDLE: 15.5, S.PREWARMED: 0}
    assert record.containers == 0


def test_a_prewarm_replica_is_prewarmed_until_its_first_request(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0, [], [], target=1, prewarm=True)  # the policy's pre-warm decision
    lives.observe(T0 + 2, ["p"], [report("p", ready_at=T0 + 2)], 1, False)
    lives.observe(T0 + 12, ["p"], [report("p", ready_at=T0 + 2, busy_s=1.0, served=True)], 1, False)
    lives.observe(T0 + 15, [], [], 0, False)
    record = store.read("e")
    assert record.total == {S.COLD_START: 2, S.PREWARMED: 9, S.BUSY: 1, S.WARM_IDLE: 3}


def test_starts_are_matched_to_replicas_in_order_and_a_cancelled_start_counts_nothing(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0, [], [], target=2, prewarm=False)
    lives.observe(T0 + 1, [], [], target=3, prewarm=False)
    lives.observe(T0 + 2, [], [], target=2, prewarm=False)  # the third start was cancelled
    lives.observe(T0 + 4, ["a", "b"], [report("a", T0 + 4), report("b", T0 + 4)], 2, False)
    lives.observe(T0 + 6, [], [], 0, False)
    record = store.read("e")
    assert record.total[S.COLD_START] == 4 + 4 and record.total[S.WARM_IDLE] == 2 + 2


def test_the_record_is_published_while_replicas_run_and_a_restarted_policy_carries_on(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0, ["r"], [report("r", T0)], 1, False)
    first = gcs.writes
    lives.observe(T0 + PUBLISH_S / 2, ["r"], [report("r", T0)], 1, False)
    assert gcs.writes == first  # not yet due
    lives.observe(T0 + PUBLISH_S, ["r"], [report("r", T0)], 1, False)
    assert gcs.writes == first + 1 and store.read("e").containers == 1
    lives.observe(T0 + 10, [], [], 0, False)
    restarted = ReplicaLives("e", store, clock=lambda: T0 + 20)
    restarted.observe(T0 + 20, ["s"], [report("s", T0 + 20)], 1, False)
    restarted.observe(T0 + 25, [], [], 0, False)
    record = store.read("e")
    assert sum(record.total.values()) == 10 + 5 and record.containers == 0


def test_a_replica_reporting_rays_start_time_is_cold_from_then_and_one_not_reported_yet_keeps_its_slot(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0, [], [], target=1, prewarm=True)
    lives.observe(T0 + 4, ["p"], [], 1, False)  # running, not reported yet: still its pre-warm slot
    lives.observe(T0 + 5, ["p"], [report("p", ready_at=T0 + 4, started_at=T0 - 1)], 1, False)  # Ray started it first
    lives.observe(T0 + 9, [], [], 0, False)
    record = store.read("e")
    assert record is not None and record.total == {S.COLD_START: 5, S.PREWARMED: 5, S.BUSY: 0, S.WARM_IDLE: 0}


def test_a_restarted_policy_counts_a_replica_that_ran_through_the_restart_once(gcs: FakeGcs) -> None:
    store = UsageStore("app")
    before = ReplicaLives("e", store, clock=lambda: T0)
    before.observe(T0, [], [], target=1, prewarm=False)
    before.observe(T0 + 3, ["r"], [report("r", ready_at=T0 + 3, busy_s=1.0, served=True, started_at=T0)], 1, False)
    before.observe(T0 + 4, ["r"], [report("r", ready_at=T0 + 3, busy_s=1.0, served=True, started_at=T0)], 1, False)
    # the controller dies at T0 + 5 (its last record: as of T0 + 4); a new one starts
    after = ReplicaLives("e", store, clock=lambda: T0 + 6)
    after.observe(T0 + 6, ["r"], [report("r", ready_at=T0 + 3, busy_s=3.0, served=True, started_at=T0)], 1, False)
    after.observe(T0 + 10, [], [], 0, False)
    record = store.read("e")
    assert record is not None and sum(record.total.values()) == pytest.approx(10)  # T0 .. T0 + 10, not more
    # what ran after the last record before the restart (as of T0 + 3) reads as idle: busy is never counted twice
    assert record.total[S.COLD_START] == 3 and record.total[S.BUSY] == 0 and record.total[S.WARM_IDLE] == 7


def test_a_policy_that_could_not_read_the_record_publishes_nothing_until_it_has(gcs: FakeGcs) -> None:
    store = UsageStore("app")
    first = ReplicaLives("e", store, clock=lambda: T0)
    first.observe(T0, ["r"], [report("r", ready_at=T0, started_at=T0)], 1, False)
    first.observe(T0 + 10, [], [], 0, False)  # the history: 10 s
    gcs.fail = True
    restarted = ReplicaLives("e", store, clock=lambda: T0 + 20)  # the GCS away as it starts
    gcs.fail = False
    restarted.observe(T0 + 20, ["s"], [report("s", ready_at=T0 + 20, started_at=T0 + 20)], 1, False)
    restarted.observe(T0 + 25, [], [], 0, False)
    record = store.read("e")
    assert record is not None and sum(record.total.values()) == 10 + 5  # read on its next tick: nothing lost


def test_an_unreadable_record_in_the_store_hides_itself_only(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0, ["r"], [report("r", ready_at=T0, started_at=T0)], 1, False)
    gcs.data[("hybrid-serve-usage", b"app/broken")] = b"{not json"
    assert set(store.read_all()) == {"e"}


def test_the_ingress_reads_the_store_at_most_once_a_second_however_many_ask(gcs: FakeGcs) -> None:
    from concurrent.futures import ThreadPoolExecutor

    now = [0.0]
    store = UsageStore("app", clock=lambda: now[0])
    ReplicaLives("e", store, clock=lambda: T0).observe(T0, ["r"], [report("r", ready_at=T0, started_at=T0)], 1, False)
    reads = gcs.reads
    with ThreadPoolExecutor(16) as pool:  # 64 clients' /health at once
        readings = list(pool.map(lambda _: store.read_recent(), range(64)))
    assert all(set(r) == {"e"} for r in readings)
    assert gcs.reads - reads == 1, "one reading shared by every caller"
    now[0] += 1.0
    assert set(store.read_recent()) == {"e"} and gcs.reads - reads == 2  # a second later: read again


def test_a_replica_started_for_a_waiting_request_is_cold_until_that_request_reaches_it(gcs: FakeGcs) -> None:
    """Serve routes a queued request only once it sees the new replica run: the replica, loaded, waits
    for it a moment (seconds under load). That is still the request's cold start, not idle time."""
    store, lives = fresh()
    lives.observe(T0, [], [], target=1, prewarm=False, waiting=True)
    lives.observe(T0 + 3.5, ["r"], [report("r", ready_at=T0 + 3, started_at=T0)], 1, False, waiting=True)
    lives.observe(T0 + 5, ["r"], [report("r", ready_at=T0 + 3, started_at=T0, busy_s=0.5, served=True)], 1, False)
    lives.observe(T0 + 8, [], [], 0, False)
    record = store.read("e")
    assert record is not None and record.total == {S.COLD_START: 4.5, S.BUSY: 0.5, S.WARM_IDLE: 3, S.PREWARMED: 0}


def test_a_replica_whose_waiting_request_went_elsewhere_idles_from_its_ready_time(gcs: FakeGcs) -> None:
    store, lives = fresh()
    lives.observe(T0 + 3.5, ["r"], [report("r", ready_at=T0 + 3, started_at=T0)], 1, False, waiting=True)
    lives.observe(T0 + 4, ["r"], [report("r", ready_at=T0 + 3, started_at=T0)], 1, False, waiting=False)
    lives.observe(T0 + 6, [], [], 0, False)
    record = store.read("e")
    assert record is not None and record.total == {S.COLD_START: 3, S.BUSY: 0, S.WARM_IDLE: 3, S.PREWARMED: 0}

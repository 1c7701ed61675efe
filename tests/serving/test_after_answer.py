"""A finished request is counted after its answer went out: at the event loop's next turn, once, with
the times it had when it ended (its metrics, its traffic record, the end of its busy time)."""

from __future__ import annotations

import asyncio
import time

from core.events import EventLog
from core.keepwarm.ledger import ContainerState, CostLedger
from core.metrics import ServerMetrics
from core.serving.model_lives import ModelLives
from core.serving.request_records import RequestRecords
from core.serving.server_events import ServerEvents
from core.serving.traffic import Traffic


LATENCY = "hybrid_request_latency_seconds"


def _records() -> RequestRecords:
    return RequestRecords(ServerMetrics(), Traffic(None), ServerEvents(EventLog(None)))


def _count(records: RequestRecords, status: str = "200") -> float:
    return records.metrics.registry.get_sample_value("hybrid_requests_total", {"experiment": "e", "status": status}) or 0.0


def test_a_finished_request_is_counted_at_the_loops_next_turn_with_the_duration_it_had_when_it_ended() -> None:
    records = _records()

    async def scenario() -> tuple[float, float, float]:
        started = time.perf_counter() - 0.25  # it ran a quarter of a second
        records.finished("e", time.time(), started, "200", None, None, "hi")
        before = _count(records)  # the answer goes out in this turn, before the bookkeeping
        time.sleep(0.1)  # what the loop does before its next turn is not the request's time
        await asyncio.sleep(0)
        return before, _count(records), records.metrics.registry.get_sample_value(f"{LATENCY}_sum", {"experiment": "e"})

    before, after, latency_s = asyncio.run(scenario())
    assert (before, after) == (0.0, 1.0)
    assert 0.25 <= latency_s < 0.3
    assert [row["requests"] for row in next(iter(records.traffic.per_minute(0).values()))] == [1]


def test_without_an_event_loop_a_finished_request_is_counted_at_once() -> None:
    records = _records()
    records.finished("e", time.time(), time.perf_counter(), "503", None, None, ["a", "b"])
    assert _count(records, "503") == 1.0


def test_a_requests_busy_time_ends_when_it_ended_and_is_counted_at_the_loops_next_turn() -> None:
    clock = [100.0]
    lives = ModelLives(CostLedger(clock=lambda: clock[0]))
    lives.loading("load", "e")
    lives.loaded("load", "e")

    def busy_s() -> float:
        record = lives.ledger.record("e", clock[0])
        assert record is not None
        return record.total[ContainerState.BUSY]

    async def scenario() -> tuple[float, float]:
        with lives.serving("e"):
            clock[0] += 2.0  # the request runs two seconds
        clock[0] += 5.0  # the loop's turn comes later (in the clock's terms: idle by then)
        during = busy_s()  # not counted yet: the container still reads busy, up to now
        await asyncio.sleep(0)
        return during, busy_s()

    during, after = asyncio.run(scenario())
    assert during == 7.0 and after == 2.0  # busy for the two seconds it ran, idle since


def test_without_an_event_loop_busy_time_ends_at_once() -> None:
    clock = [0.0]
    lives = ModelLives(CostLedger(clock=lambda: clock[0]))
    lives.loading("load", "e")
    lives.loaded("load", "e")
    with lives.serving("e"):
        clock[0] += 1.0
    clock[0] += 3.0
    record = lives.ledger.record("e", clock[0])
    assert record is not None and record.total[ContainerState.BUSY] == 1.0 and record.total[ContainerState.WARM_IDLE] == 3.0

"""The cost ledger on a scripted clock: container lifecycles in, seconds by state and cost out."""

from __future__ import annotations

import pytest

from core.keepwarm.cost_report import midnight_utc, summed, usage_view
from core.keepwarm.ledger import ContainerState as S, CostLedger, UsageRecord
from core.prices import price_of, price_table
from core.settings import SettingsError, load_settings

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: a minute boundary


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_container_life_is_split_into_cold_start_busy_and_warm_idle() -> None:
    clock = Clock()
    ledger = CostLedger(clock)
    ledger.started("e", "c1", at=T0)
    ledger.request_started("c1", at=T0 + 1)  # the request that started it waits for the load
    ledger.ready("c1", at=T0 + 5)
    ledger.request_finished("c1", at=T0 + 7)
    ledger.request_started("c1", at=T0 + 20)
    ledger.request_started("c1", at=T0 + 21)  # two at once: busy once
    ledger.request_finished("c1", at=T0 + 22)
    ledger.request_finished("c1", at=T0 + 23)
    ledger.stopped("c1", at=T0 + 83)
    record = ledger.record("e", now=T0 + 1000)
    assert record is not None and record.containers == 0
    assert record.total == {S.COLD_START: 5, S.BUSY: 2 + 3, S.WARM_IDLE: 13 + 60, S.PREWARMED: 0}
    # the minutes: [T0, T0+60) and [T0+60, T0+83)
    assert sum(record.minutes[int(T0 // 60)].values()) == 60 and sum(record.minutes[int(T0 // 60) + 1].values()) == 23


def test_a_prewarmed_container_is_prewarmed_until_its_first_request_then_warm_idle() -> None:
    ledger = CostLedger(Clock())
    ledger.started("e", "p", prewarm=True, at=T0)
    ledger.ready("p", at=T0 + 4)
    ledger.request_started("p", at=T0 + 30)
    ledger.request_finished("p", at=T0 + 31)
    ledger.stopped("p", at=T0 + 41)
    record = ledger.record("e", now=T0 + 41)
    assert record is not None
    assert record.total == {S.COLD_START: 4, S.PREWARMED: 26, S.BUSY: 1, S.WARM_IDLE: 10}


def test_a_running_container_counts_up_to_the_reading_and_the_reading_changes_nothing() -> None:
    clock = Clock()
    ledger = CostLedger(clock)
    ledger.started("e", "c", at=T0)
    ledger.ready("c", at=T0 + 2)
    clock.t = T0 + 12
    first = ledger.record("e")
    assert first is not None and first.containers == 1 and first.total[S.WARM_IDLE] == 10
    clock.t = T0 + 22
    second = ledger.record("e")
    assert second is not None and second.total[S.WARM_IDLE] == 20 and second.total[S.COLD_START] == 2
    assert second.containers == 1 and ledger.record("other") is None


def test_unknown_containers_and_repeated_stops_are_ignored() -> None:
    ledger = CostLedger(Clock())
    ledger.request_started("ghost", at=T0)  # started before the ledger: nothing to count
    ledger.stopped("ghost", at=T0)
    ledger.started("e", "c", at=T0)
    ledger.ready("c", at=T0 + 1)
    ledger.stopped("c", at=T0 + 3)
    ledger.stopped("c", at=T0 + 100)
    ledger.request_finished("c", at=T0 + 100)
    record = ledger.record("e", now=T0 + 200)
    assert record is not None and sum(record.total.values()) == 3


def test_stop_all_closes_every_container_of_every_experiment() -> None:
    ledger = CostLedger(Clock())
    for i, experiment in enumerate(["a", "b"]):
        ledger.started(experiment, f"c{i}", at=T0)
        ledger.ready(f"c{i}", at=T0 + 1)
    ledger.stop_all(at=T0 + 11)
    records = ledger.records(now=T0 + 500)
    assert {e: sum(r.total.values()) for e, r in records.items()} == {"a": 11, "b": 11}
    assert all(r.containers == 0 for r in records.values())


def test_a_record_survives_its_json_form() -> None:
    ledger = CostLedger(Clock())
    ledger.started("e", "c", prewarm=True, at=T0 + 30)
    ledger.ready("c", at=T0 + 50)
    record = ledger.record("e", now=T0 + 130)
    assert record is not None
    again = UsageRecord.from_json(record.to_json())
    assert again.total == record.total and again.minutes == record.minutes and again.containers == 1


def test_the_periods_cover_the_last_hour_today_and_since_start_and_price_every_second() -> None:
    ledger = CostLedger(Clock())
    ledger.started("e", "old", at=T0 - 2 * 3600)
    ledger.ready("old", at=T0 - 2 * 3600)
    ledger.stopped("old", at=T0 - 2 * 3600 + 600)  # 10 idle minutes two hours ago (today: 06:00 UTC)
    ledger.started("e", "new", at=T0)
    ledger.ready("new", at=T0 + 60)
    ledger.stopped("new", at=T0 + 120)
    record = ledger.record("e", now=T0 + 300)
    assert record is not None
    t4 = price_of("T4", None)
    view = usage_view(record, t4, T0 + 300)
    assert view["last_hour"]["container_seconds"] == {"cold_start": 60, "busy": 0, "warm_idle": 60, "prewarmed": 0}
    assert view["today"]["total_seconds"] == 720 and view["since_start"]["total_seconds"] == 720
    assert view["last_hour"]["total_cost"] == pytest.approx(120 * 0.000164)
    assert view["last_hour"]["cost"]["cold_start"] == pytest.approx(60 * 0.000164)
    assert midnight_utc(T0) == T0 - 8 * 3600
    both = summed([record, record], T0 + 300, "e")
    assert usage_view(both, t4, T0 + 300)["since_start"]["total_seconds"] == 1440
    later = usage_view(record, t4, T0 + 3 * 3600)  # read hours after its last container stopped
    assert later["last_hour"]["total_seconds"] == 0 and later["since_start"]["total_seconds"] == 720


def test_an_unknown_price_shows_seconds_and_no_cost() -> None:
    record = UsageRecord("e", T0, minutes={int(T0 // 60): {s: 1.0 for s in S}})
    record.total[S.BUSY] = 1.0
    view = usage_view(record, price_of("TPU-v9", None), T0)
    assert view["since_start"]["total_seconds"] == 1 and view["since_start"]["total_cost"] is None
    assert view["since_start"]["cost"] is None


def test_the_price_table_states_its_source_and_prices_modal_gpu_spellings() -> None:
    table = price_table()
    assert table.source.startswith("https://") and table.date and table.currency == "USD"
    assert table.lookup("h100") == table.per_second["H100"] and table.lookup("H100:2") == 2 * table.per_second["H100"]
    assert table.lookup("A100-80GB") > table.lookup("A100")  # type: ignore[operator]


def test_the_settings_price_the_deploys_gpu_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    table = price_table()
    assert load_settings(env_file=None).price().per_second == table.per_second["T4"]  # MODAL_GPU's default
    assert load_settings(env_file=None, modal_gpu="L4").price().per_second == table.per_second["L4"]
    assert load_settings(env_file=None, modal_gpu="L4", cost_gpu="H100").price().gpu == "H100"
    own = load_settings(env_file=None, cost_per_s=0.5).price()
    assert own.per_second == 0.5 and own.source == "HYBRID_COST_PER_S"
    monkeypatch.setenv("HYBRID_COST_GPU", "K80")
    with pytest.raises(SettingsError, match=r"HYBRID_COST_GPU='K80': no price for 'k80'.*allowed: a GPU of the price table \(B200"):
        load_settings(env_file=None)
    monkeypatch.setenv("HYBRID_COST_GPU", "T4")
    monkeypatch.setenv("HYBRID_COST_PER_S", "-1")
    with pytest.raises(SettingsError, match="HYBRID_COST_PER_S='-1'.*dollars ≥ 0"):
        load_settings(env_file=None)
    monkeypatch.setenv("HYBRID_COST_PER_S", "inf")  # would make every cost unanswerable JSON
    with pytest.raises(SettingsError, match="HYBRID_COST_PER_S='inf': input should be a finite number"):
        load_settings(env_file=None)


def test_a_sampled_container_counts_its_busy_seconds_at_the_end_of_each_interval() -> None:
    ledger = CostLedger(Clock())
    ledger.started("e", "r", prewarm=True, at=T0)
    ledger.sampled("r", busy_s=0.0, in_flight=0, served=False, at=T0 + 1)  # still starting: nothing yet
    ledger.ready("r", at=T0 + 3)
    ledger.sampled("r", busy_s=0.0, in_flight=0, served=False, at=T0 + 10)  # a pre-warm, idle
    ledger.sampled("r", busy_s=2.0, in_flight=1, served=True, at=T0 + 20)  # 2 s busy, one running now
    ledger.sampled("r", busy_s=2.0, in_flight=0, served=True, at=T0 + 20)  # the same moment: nothing to add
    ledger.sampled("r", busy_s=5.0, in_flight=0, served=True, at=T0 + 30)
    ledger.stopped("r", at=T0 + 40)
    record = ledger.record("e", now=T0 + 40)
    assert record is not None
    assert record.total == {S.COLD_START: 3, S.PREWARMED: 7 + 8, S.BUSY: 2 + 3, S.WARM_IDLE: 7 + 10}
    assert sum(record.total.values()) == 40


def test_a_restored_record_carries_on() -> None:
    first = CostLedger(Clock())
    first.started("e", "c", at=T0)
    first.stopped("c", at=T0 + 10)
    saved = first.record("e", now=T0 + 10)
    assert saved is not None
    second = CostLedger(Clock(T0 + 20))
    second.restore(UsageRecord.from_json(saved.to_json()))
    second.started("e", "d", at=T0 + 20)
    second.stopped("d", at=T0 + 25)
    again = second.record("e", now=T0 + 30)
    assert again is not None and again.total[S.COLD_START] == 15


def test_a_span_from_a_bad_clock_is_counted_in_total_without_walking_every_minute_since_1970() -> None:
    ledger = CostLedger(Clock())
    ledger.started("e", "c", at=0.0)  # e.g. a replica that reported no start time as 0
    ledger.stopped("c", at=T0)
    record = ledger.record("e", now=T0)
    assert record is not None and record.total[S.COLD_START] == T0 and len(record.minutes) <= 26 * 60 + 1


def test_busy_seconds_reported_after_a_sample_carry_to_the_next_and_none_is_lost() -> None:
    """A replica busy all the time, its report pushed every 0.2 s and sampled every 0.1 s: every other
    sample sees a stale report. What a sample cannot fit is counted by the next."""
    ledger = CostLedger(Clock())
    ledger.started("e", "r", at=T0)
    ledger.ready("r", at=T0)
    reported = 0.0
    for tick in range(1, 101):
        if tick % 2 == 0:
            reported = tick * 0.1  # the push: busy since ready
        ledger.sampled("r", busy_s=reported, in_flight=1, served=True, at=T0 + tick * 0.1)
    ledger.stopped("r", at=T0 + 10.0)
    record = ledger.record("e", now=T0 + 10)
    assert record is not None and record.total[S.BUSY] == pytest.approx(10.0, abs=0.15)
    ledger.started("e", "bad", at=float("nan"))  # a non-finite report: nothing counted, nothing raised
    ledger.stopped("bad", at=T0 + 11)
    assert ledger.record("e", now=T0 + 11).total[S.BUSY] == pytest.approx(10.0, abs=0.15)  # type: ignore[union-attr]

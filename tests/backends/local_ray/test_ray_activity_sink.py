"""The Ray ingress's sink: each experiment's activity published to the GCS (the fake at its network
call) for the experiment's scaling policy, coalesced under load, and read back by an ingress that
restarts."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from backends.local_ray.activity_sink import PublishedActivity, Publisher
from backends.local_ray.activity_store import ActivityStore
from backends.local_ray.settings import load_ray_settings
from core.keepwarm.controller import WindowController
from core.keepwarm.decision import WindowReason
from core.keepwarm.policies import policy_from_settings
from core.keepwarm.shared_activity import DurableActivity


def tracker_for(**settings: Any) -> PublishedActivity:
    values = load_ray_settings(env_file=None, base_warm_time=600, extension_time=600, activity_window=300, **settings)
    return PublishedActivity(values, policy_from_settings(values), ActivityStore("app"))


def test_a_published_arrival_is_in_the_gcs_before_publish_returns(gcs: Any) -> None:
    tracker = tracker_for(time_scale=10)
    before = time.time() * 10
    tracker.record_request("e")
    asyncio.run(tracker.published("e"))
    record = ActivityStore("app").read("e")
    assert record is not None and record.total_requests == 1
    assert before <= record.last_request <= time.time() * 10  # emulated wall-clock seconds: any process reads them


def test_concurrent_arrivals_coalesce_and_every_publish_sees_its_own_arrival(gcs: Any) -> None:
    written: list[DurableActivity] = []
    gate = threading.Event()

    def slow_write(record: DurableActivity) -> None:
        gate.wait(5)
        written.append(record)

    tracker = tracker_for()
    publisher = Publisher(tracker.export, slow_write)

    async def request(i: int) -> int:
        tracker.record_request("e")
        seen = tracker.export("e").total_requests  # type: ignore[union-attr]
        await publisher.publish("e")
        return seen

    async def scenario() -> list[int]:
        tasks = [asyncio.create_task(request(i)) for i in range(64)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)

    seen = asyncio.run(scenario())
    assert len(written) <= 3  # the first, then one carrying every arrival that came meanwhile
    assert written[-1].total_requests == 64
    # every publish returned after a write that held its arrival
    assert all(any(w.total_requests >= s for w in written) for s in seen)


def test_a_failing_write_loses_the_request_nothing_and_the_next_write_carries_it(gcs: Any, caplog: Any) -> None:
    tracker = tracker_for()
    gcs.fail = True
    tracker.record_request("e")
    asyncio.run(tracker.published("e"))  # no exception: the request is served all the same
    assert "could not publish e's activity" in caplog.text
    gcs.fail = False
    tracker.record_request("e")
    asyncio.run(tracker.published("e"))
    assert ActivityStore("app").read("e").total_requests == 2  # type: ignore[union-attr]


def test_a_failed_write_is_tried_again_without_another_request(gcs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write that takes a pool's count of requests to 0 may be the last for a while: lost, the pool
    would hold replicas for requests long answered."""
    from backends.local_ray import activity_sink

    monkeypatch.setattr(activity_sink, "RETRY_S", 0.05)
    tracker = tracker_for()

    async def scenario() -> int | None:
        tracker.record_request("e")
        gcs.fail = True
        await tracker.published("e")
        gcs.fail = False  # the GCS is back; no request comes
        await asyncio.sleep(0.3)
        published = ActivityStore("app").read_published("e")
        return None if published is None else published.activity.total_requests

    assert asyncio.run(scenario()) == 1


def test_a_completion_is_published_in_the_background(gcs: Any) -> None:
    tracker = tracker_for()

    async def scenario() -> None:
        tracker.record_request("e")
        await tracker.published("e")
        tracker.record_completion("e")
        for _ in range(100):
            record = ActivityStore("app").read("e")
            if record is not None and record.last_completion is not None:
                return
            await asyncio.sleep(0.01)
        pytest.fail("the completion was never published")

    asyncio.run(scenario())


def test_a_restarted_ingress_carries_on_with_the_history_and_what_was_learned(gcs: Any) -> None:
    """Without the GCS's record a restarted ingress would take the next request for the first one
    (base window, the learned idle gaps gone) and publish that over the pool's history."""
    first = tracker_for(policy_name="adaptive")
    first.record_request("e")
    first.record_completion("e")
    asyncio.run(first.published("e"))
    published = ActivityStore("app").read("e")
    assert published is not None and published.idle_gaps  # what the adaptive policy learned, as bytes

    restarted = tracker_for()
    restarted.take_in_published()
    settings = load_ray_settings(env_file=None, base_warm_time=600, extension_time=600, activity_window=300)
    plan = WindowController(restarted, policy_from_settings(settings)).arrived("e")
    assert plan.reason is WindowReason.RECENT_ACTIVITY and plan.window_s == 1200  # the request before the restart counts
    assert restarted.export("e").total_requests == 2  # type: ignore[union-attr]


def test_the_requests_at_a_pool_are_published_as_they_come_and_go_and_a_restarted_ingress_clears_them(gcs: Any) -> None:
    """A pool whose requests wait for replicas to start is sized by the ingress's count (Serve's load
    figure shows one of them after a scale to zero): each request given to the pool's handle and each
    answer publishes it; a restarted ingress writes 0 over what the one before it could not answer."""
    from backends.local_ray.handles import Handles

    async def burst() -> list[int]:
        handles = Handles("app", open_handle=lambda e, app: object())
        tracker = PublishedActivity(load_ray_settings(env_file=None), policy_from_settings(load_ray_settings(env_file=None)),
                                    ActivityStore("app"), at_pool=handles.in_flight)
        handles.changed = tracker.publisher.soon
        seen = []
        for _ in range(3):
            tracker.record_request("e")
            await tracker.published("e")
            handles.acquire("e")
        await asyncio.sleep(0.05)  # the background publications land
        seen.append(ActivityStore("app").read_published("e").in_flight)  # type: ignore[union-attr]
        handles.release("e")  # answered: published by the release itself (the completion's comes after)
        await asyncio.sleep(0.05)
        seen.append(ActivityStore("app").read_published("e").in_flight)  # type: ignore[union-attr]
        tracker.record_completion("e")
        return seen

    assert asyncio.run(burst()) == [3, 2]
    restarted = tracker_for()
    restarted.take_in_published()
    published = ActivityStore("app").read_published("e")
    assert published is not None and published.in_flight == 0 and published.activity.total_requests == 3


def test_retired_and_stopped_applications_leave_no_activity_behind(gcs: Any) -> None:
    ActivityStore("app").write(DurableActivity("a", 1.0, None, None, 1))
    ActivityStore("app").write(DurableActivity("b", 1.0, None, None, 1))
    ActivityStore("other").write(DurableActivity("a", 1.0, None, None, 1))
    ActivityStore("app").clear("a")
    assert [r.activity.experiment_id for r in ActivityStore("app").read_all()] == ["b"]
    ActivityStore("app").forget()
    assert ActivityStore("app").read_all() == [] and ActivityStore("other").read("a") is not None
    from backends.local_ray.schedule_store import ScheduleStore
    from core.keepwarm.warm_schedule import WarmWindow

    office = (WarmWindow(hours="09:00-18:00"),)
    ScheduleStore("app").write("a", office)
    ScheduleStore("other").write("a", office)
    ScheduleStore("app").forget()
    assert ScheduleStore("app").read("a") is None and ScheduleStore("other").read("a") == office


def test_the_burst_gaps_and_the_width_reach_the_controller_through_the_gcs(gcs: Any) -> None:
    """The controller plans from what the ingress published: without the burst gaps and the width a
    pool's extra replicas would keep the last one's window and a pre-warm would bring back one replica."""
    ingress = tracker_for(policy_name="adaptive", modal_concurrent_inputs=1)
    for start in (0.0, 900.0):  # three requests at once, twice
        for i in range(3):
            ingress.record_request("e", at=start + i)
        for i in range(3):
            ingress.record_completion("e", at=start + 30 + i)
    asyncio.run(ingress.published("e"))
    published = ActivityStore("app").read("e")
    assert published is not None and published.width == 3 and published.burst_gaps
    from backends.local_ray.scaling import pool_activity
    from core.keepwarm.adaptive import AdaptiveParams, AdaptiveLearner

    activity = pool_activity("e", published, [], 1000.0, 300, AdaptiveLearner(AdaptiveParams(concurrent_inputs=1)))
    assert activity is not None and activity.width == 3
    assert activity.learned is not None and activity.learned.burst_gaps == 2  # levels 2 and 3, once each

"""Burst gaps and widths: the time an extra container would idle before its experiment needs it again,
and how many containers a spell needs — against a brute-force count of containers over time."""

from __future__ import annotations

import math

from hypothesis import given, settings as hsettings, strategies as st

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy
from core.keepwarm.burst_levels import SPELL_BREAK_S, BurstLevels


def test_by_hand_one_request_a_container() -> None:
    levels = BurstLevels()
    assert levels.arrive(0.0) is None  # the first container: its gaps are the idle gaps
    assert levels.arrive(1.0) is None  # a second container, never needed before: no gap yet
    levels.complete(5.0)  # 2 → 1 in flight: the second container idles from 5
    levels.complete(6.0)
    assert levels.arrive(100.0) is None and levels.arrive(130.0) == 125.0  # needed again 125 s later
    assert levels.width == 2


def test_containers_taking_several_requests_count_in_containers() -> None:
    levels = BurstLevels(per_container=3)
    gaps = [levels.arrive(float(t)) for t in range(4)]  # the 4th request needs a 2nd container
    assert gaps == [None] * 4 and levels.width == 2
    levels.complete(10.0)  # 4 → 3 in flight: the 2nd container is free from 10
    assert levels.arrive(20.0) == 10.0  # back to 4: the gap of level 2
    levels.complete(21.0)
    levels.complete(22.0)
    assert levels.arrive(23.0) is None  # 3 in flight: the first container has room


def test_the_width_is_the_latest_spell_or_the_one_before_whichever_is_more() -> None:
    levels = BurstLevels()
    for t in range(3):
        levels.arrive(float(t))
    for t in range(3):
        levels.complete(10.0 + t)
    assert levels.width == 3
    levels.arrive(12.0 + SPELL_BREAK_S)  # a new spell: one at a time
    levels.complete(13.0 + SPELL_BREAK_S)
    assert levels.width == 3  # the spell before was wider
    levels.arrive(14.0 + 2 * SPELL_BREAK_S)
    assert levels.width == 1  # two narrow spells: the wide one is forgotten
    levels.widen(4)  # another process saw this spell 4 wide
    assert levels.width == 4


@hsettings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.lists(st.tuples(st.sampled_from([0.0, 0.5, 7.0, 45.0, 61.0, 300.0]), st.booleans()),
                                   max_size=60))
def test_gaps_and_width_are_those_of_the_containers_needed_over_time(per: int, steps: list[tuple[float, bool]]) -> None:
    """Brute force: the containers needed at each moment are ceil(in flight / per); an arrival that
    raises them to k yields the time since they last fell below k; the width is the most needed in a
    spell (nothing in flight for SPELL_BREAK_S ends one) or the spell before."""
    levels, t, in_flight = BurstLevels(per), 0.0, 0
    fell: dict[int, float] = {}  # level k → when the containers needed last fell below k
    spells: list[int] = [0]
    idle_since: float | None = None
    for gap, arrival in steps:
        t += gap
        if arrival:
            if in_flight == 0 and idle_since is not None and t - idle_since >= SPELL_BREAK_S:
                spells.append(0)
            in_flight += 1
            need = math.ceil(in_flight / per)
            rose = need > math.ceil((in_flight - 1) / per)
            expected = t - fell[need] if rose and need >= 2 and need in fell else None
            spells[-1] = max(spells[-1], need)
            assert levels.arrive(t) == expected
        elif in_flight:
            before = math.ceil(in_flight / per)
            in_flight -= 1
            if math.ceil(in_flight / per) < before:
                fell[before] = t
            if in_flight == 0:
                idle_since = t
            levels.complete(t)
        assert levels.in_flight == in_flight
        assert levels.width == max(spells[-2:])


def test_the_tracker_learns_burst_gaps_and_width_for_a_learning_policy_and_they_outlive_the_process() -> None:
    policy = adaptive_policy(AdaptiveParams(concurrent_inputs=2))
    tracker = ActivityTracker(300, clock=lambda: 0.0, learner=policy.learner)
    for start in (0.0, 600.0, 1200.0):  # three requests at once: 2 containers of 2
        for i in range(3):
            tracker.record_request("e", at=start + i)
        for i in range(3):
            tracker.record_completion("e", at=start + 30 + i)
    activity = tracker.record_request("e", at=1800.0)
    assert activity.width == 2 and activity.learned is not None and activity.learned.burst_gaps == 2
    record = tracker.export("e")
    assert record is not None and record.width == 2 and record.burst_gaps is not None
    restored = ActivityTracker(300, clock=lambda: 0.0, learner=policy.learner)
    restored.restore(record)
    again = restored.snapshot()[0]
    assert again.width == 2 and again.learned is not None and again.learned.burst_gaps == 2
    assert ActivityTracker(300, clock=lambda: 0.0).record_request("e", at=0.0).width == 0  # nothing learned: not kept

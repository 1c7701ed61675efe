"""Calls that may hang, on daemon threads of their own: bounded waits, one thread per key, released
at once when the process stops."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.serving.detached import CallAbandoned, CallTimedOut, DetachedCalls


def test_a_call_answers_with_its_value_or_its_exception_from_a_daemon_thread() -> None:
    calls = DetachedCalls("t")
    where: list[threading.Thread] = []
    assert calls.call(lambda: where.append(threading.current_thread()) or 42, timeout_s=5) == 42
    assert where[0] is not threading.current_thread() and where[0].daemon
    with pytest.raises(KeyError, match="gone"):
        calls.call(lambda: {}["gone"], timeout_s=5)
    assert calls.running() == 0


def test_a_hung_call_is_given_up_at_its_bound_and_later_callers_share_its_thread() -> None:
    calls, release, started = DetachedCalls("t"), threading.Event(), []

    def hangs() -> str:
        started.append(1)
        release.wait(30)
        return "late"

    with pytest.raises(CallTimedOut, match="no answer within 0.2s"):
        calls.call(hangs, timeout_s=0.2, key="src")
    with pytest.raises(CallTimedOut):  # the same source again: no second thread
        asyncio.run(calls.acall(hangs, timeout_s=0.2, key="src"))
    assert started == [1] and calls.running() == 1
    release.set()
    assert calls.call(hangs, timeout_s=5, key="src") == "late"
    assert calls.running() == 0


def test_a_cancelled_waiter_leaves_the_call_to_the_others() -> None:
    calls, release = DetachedCalls("t"), threading.Event()

    async def scenario() -> str:
        first = asyncio.ensure_future(calls.acall(lambda: release.wait(30) and "done", key="k"))
        second = asyncio.ensure_future(calls.acall(lambda: "never run", key="k"))
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.wait_for(second, 5)

    assert asyncio.run(scenario()) == "done"


def test_stop_releases_every_waiter_at_once_and_refuses_later_calls() -> None:
    calls, release = DetachedCalls("t"), threading.Event()
    outcomes: list[BaseException] = []

    def waiter() -> None:
        try:
            calls.call(lambda: release.wait(30), timeout_s=None)
        except BaseException as exc:
            outcomes.append(exc)

    waiters = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in waiters:
        thread.start()
    time.sleep(0.1)
    calls.stop()
    for thread in waiters:
        thread.join(5)
    assert [type(e) for e in outcomes] == [CallAbandoned] * 3
    with pytest.raises(CallAbandoned, match="stopping"):
        calls.call(lambda: 1)
    release.set()

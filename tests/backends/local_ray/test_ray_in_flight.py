"""What ends a Ray ingress request early (backends/local_ray/in_flight.py), on a real event loop: its
experiment retired (404) or the server stopping (503) end the wait for a replica; a request a replica
has taken finishes, and only a stop's deadline cuts it (503)."""

from __future__ import annotations

import asyncio

import pytest

from backends.local_ray.in_flight import InFlight, Ticket
from core.serving.errors import BackendUnavailable, Overloaded, UnknownExperiment


async def _request(taken: asyncio.Event | None, answer: asyncio.Future[str], ticket: Ticket) -> str:
    if taken is not None:
        ticket.take()
        taken.set()
    return await answer


def test_a_retirement_ends_the_waiting_requests_of_its_experiment_only() -> None:
    async def scenario() -> None:
        flight, loop = InFlight(), asyncio.get_running_loop()
        waiting, other, running = loop.create_future(), loop.create_future(), loop.create_future()
        taken = asyncio.Event()
        tasks = [asyncio.create_task(flight.run("e", lambda t: _request(None, waiting, t))),
                 asyncio.create_task(flight.run("f", lambda t: _request(None, other, t))),
                 asyncio.create_task(flight.run("e", lambda t: _request(taken, running, t)))]
        await taken.wait()
        flight.retire("e")
        with pytest.raises(UnknownExperiment, match="retired while this request waited"):
            await tasks[0]
        assert waiting.cancelled() and not tasks[1].done() and not tasks[2].done()
        running.set_result("served")
        other.set_result("served")
        assert [await tasks[1], await tasks[2]] == ["served", "served"]

    asyncio.run(scenario())


def test_a_running_request_whose_pool_fails_under_it_after_a_retirement_is_a_404() -> None:
    async def scenario() -> None:
        flight, failed = InFlight(), asyncio.get_running_loop().create_future()
        taken = asyncio.Event()
        task = asyncio.create_task(flight.run("e", lambda t: _request(taken, failed, t)))
        await taken.wait()
        flight.retire("e")
        failed.set_exception(BackendUnavailable("e: the replica failed (ActorDiedError); retry"))
        with pytest.raises(UnknownExperiment, match="retired while a replica ran"):
            await task

    asyncio.run(scenario())


def test_a_stop_refuses_new_and_waiting_requests_and_gives_running_ones_the_deadline() -> None:
    async def scenario() -> None:
        flight, loop = InFlight(), asyncio.get_running_loop()
        waiting, quick, slow = loop.create_future(), loop.create_future(), loop.create_future()
        quick_taken, slow_taken = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(flight.run("e", lambda t: _request(None, waiting, t))),
                 asyncio.create_task(flight.run("e", lambda t: _request(quick_taken, quick, t))),
                 asyncio.create_task(flight.run("e", lambda t: _request(slow_taken, slow, t)))]
        await quick_taken.wait()
        await slow_taken.wait()
        flight.stop_taking()
        with pytest.raises(Overloaded, match="shutting down") as refused:
            await tasks[0]
        assert refused.value.retry_after_s
        with pytest.raises(Overloaded):
            await flight.run("e", lambda t: _request(None, loop.create_future(), t))
        loop.call_later(0.05, quick.set_result, "served")
        assert await flight.drain(0.2) == 1  # the slow one did not finish in time
        assert await tasks[1] == "served"
        with pytest.raises(Overloaded, match="HYBRID_SHUTDOWN_TIMEOUT_S"):
            await tasks[2]
        assert len(flight) == 0

    asyncio.run(scenario())

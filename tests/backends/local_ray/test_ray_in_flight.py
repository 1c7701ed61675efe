"""What ends a Ray ingress request early (backends/local_ray/in_flight.py), on a real event loop: its
experiment retired (404) or the server stopping (503) end the wait for a replica; a request a replica
has taken finishes, and only a stop's deadline cuts it (503)."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from backends.local_ray.in_flight import InFlight, Ticket
from core.serving.errors import BackendUnavailable, Overloaded, UnknownExperiment
from core.serving.prediction import Prediction, StreamingPrediction


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


class _Tokens:
    """A replica's stream: the tokens put in it, until `None`; closing it stops the generation."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> "_Tokens":
        return self

    async def __anext__(self) -> str:
        token = await self.queue.get()
        if token is None:
            raise StopAsyncIteration
        return token

    async def aclose(self) -> None:
        self.closed = True


async def _streamed(tokens: _Tokens, ticket: Ticket) -> StreamingPrediction:
    ticket.take()
    return StreamingPrediction(Prediction([], cold_load=False, load_ms=0, queue_ms=0, inference_ms=0, batch_inputs=1), tokens)


async def _read(items: AsyncIterator[str], into: list[str]) -> None:
    async for token in items:
        into.append(token)


async def _reading(flight: InFlight) -> tuple[_Tokens, list[str], AsyncIterator[str], "asyncio.Task[None]"]:
    """A stream a replica has started, its first token sent, and a reader (the response) on it."""
    tokens, read = _Tokens(), []
    answer = await flight.run("gen", lambda t: _streamed(tokens, t))
    reader = asyncio.create_task(_read(answer.items, read))
    tokens.queue.put_nowait("a")
    return tokens, read, answer.items, reader


def test_a_stop_lets_a_stream_finish_its_tokens_within_the_deadline() -> None:
    async def scenario() -> None:
        flight = InFlight()
        tokens, read, _, reader = await _reading(flight)
        flight.stop_taking()
        draining = asyncio.create_task(flight.drain(2.0))
        await asyncio.sleep(0.05)
        assert len(flight) == 1 and not draining.done()  # still in flight: the stop waits for its last token
        tokens.queue.put_nowait("b")
        tokens.queue.put_nowait(None)
        assert await draining == 0
        await reader
        assert read == ["a", "b"] and len(flight) == 0

    asyncio.run(scenario())


def test_a_stream_past_the_stop_deadline_ends_with_a_503_and_its_generation_stops() -> None:
    async def scenario() -> None:
        flight = InFlight()
        tokens, read, _, reader = await _reading(flight)
        flight.stop_taking()
        assert await flight.drain(0.1) == 1
        with pytest.raises(Overloaded, match="HYBRID_SHUTDOWN_TIMEOUT_S"):
            await reader
        assert read == ["a"] and tokens.closed and len(flight) == 0

    asyncio.run(scenario())


def test_a_client_hanging_up_mid_stream_stops_its_generation_and_leaves_nothing_in_flight() -> None:
    async def scenario() -> None:
        flight = InFlight()
        tokens, read, items, reader = await _reading(flight)
        await asyncio.sleep(0.05)
        assert len(flight) == 1
        reader.cancel()  # the response's sending task, cancelled when its client hangs up
        await asyncio.gather(reader, return_exceptions=True)
        await items.aclose()  # type: ignore[attr-defined]  # as the response's `aclosing` does
        assert read == ["a"] and tokens.closed and len(flight) == 0
        assert await flight.drain(0.1) == 0

    asyncio.run(scenario())


def test_a_stream_closed_before_its_first_item_closes_the_replicas_stream() -> None:
    """A client that leaves before the first token (its response closes a stream nobody read): an async
    generator closed before it started skips its `finally`, so the replica's stream — and the pool's
    handle and the count of requests at the pool it holds — stayed open for good."""
    async def scenario() -> None:
        flight = InFlight()
        tokens = _Tokens()
        answer = await flight.run("gen", lambda t: _streamed(tokens, t))
        await answer.items.aclose()  # type: ignore[attr-defined]  # never read
        assert tokens.closed and len(flight) == 0

    asyncio.run(scenario())

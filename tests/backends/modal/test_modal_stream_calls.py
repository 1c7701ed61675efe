"""A Modal stream left early cancels its function call (backends/modal_backend/stream_calls.py), on a
real event loop; the container side runs in tests/backends/modal/test_modal_container.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import pytest

from backends.modal_backend.stream_calls import StreamCalls, call_named
from core.serving.streaming import StreamEnd, Token

START = {"prediction": "start"}
END = StreamEnd(generated_text="ab", tokens=2, inference_ms=1.0)


async def _remote_gen(items: list[Any], then_wait: bool = False) -> AsyncIterator[Any]:
    """A container's stream: the item naming its call, then `items` (then, with `then_wait`, no more
    items for as long as the generation waits, e.g. for the model)."""
    yield call_named("fc-1")
    for item in items:
        yield item
    if then_wait:
        await asyncio.Event().wait()


def _calls() -> tuple[StreamCalls, list[str]]:
    cancelled: list[str] = []

    async def cancel(call_id: str) -> None:
        cancelled.append(call_id)

    return StreamCalls(cancel), cancelled


def test_a_stream_read_to_its_end_cancels_nothing_and_hides_the_item_naming_its_call() -> None:
    async def scenario() -> None:
        calls, cancelled = _calls()
        assert [item async for item in calls.followed(_remote_gen([START, Token("a"), END]))] == [START, Token("a"), END]
        closed_after_end = calls.followed(_remote_gen([START, END]))
        assert [await anext(closed_after_end), await anext(closed_after_end)] == [START, END]
        await closed_after_end.aclose()  # the response stopped reading at the end event: nothing left to cancel
        await calls.settle()
        assert cancelled == []

    asyncio.run(scenario())


def test_a_stream_left_early_cancels_its_call_also_before_its_start() -> None:
    async def scenario() -> None:
        calls, cancelled = _calls()
        midway = calls.followed(_remote_gen([START, Token("a")], then_wait=True))
        assert await anext(midway) == START
        await midway.aclose()  # the client hung up after the start event
        waiting = calls.followed(_remote_gen([], then_wait=True))  # the generation waits for the model
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(waiting), 0.1)  # the request's wait for its start ran out (or it left)
        await waiting.aclose()
        await calls.settle()
        assert cancelled == ["fc-1", "fc-1"]

    asyncio.run(scenario())


def test_a_failed_cancellation_is_logged_and_the_close_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async def cancel(call_id: str) -> None:
            raise ConnectionError("Modal unreachable")

        calls = StreamCalls(cancel)
        left = calls.followed(_remote_gen([START, Token("a")]))
        await anext(left)
        await left.aclose()
        await calls.settle()

    with caplog.at_level(logging.WARNING, logger="hybrid_serve.modal.streams"):
        asyncio.run(scenario())
    assert "could not cancel the stream's call fc-1 (ConnectionError" in caplog.text

"""A Modal stream left early cancels its function call (backends/modal_backend/stream_calls.py), on a
real event loop; the container side runs in tests/backends/modal/test_modal_container.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import pytest

from backends.modal_backend.stream_calls import CALL_ID, StreamCalls, named


async def _remote_gen(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


ITEMS = [named({"prediction": "start"}, "fc-1"), "token a", "token b"]


def test_a_stream_left_early_cancels_the_call_its_first_item_names_and_one_read_to_its_end_does_not() -> None:
    async def scenario() -> list[str]:
        cancelled: list[str] = []

        async def cancel(call_id: str) -> None:
            cancelled.append(call_id)

        calls = StreamCalls(cancel)
        whole = [item async for item in calls.followed(_remote_gen(ITEMS))]
        assert whole == ITEMS and whole[0][CALL_ID] == "fc-1"
        await calls.settle()
        assert cancelled == []
        left = calls.followed(_remote_gen(ITEMS))
        assert (await anext(left))[CALL_ID] == "fc-1"
        await left.aclose()  # the client hung up
        await calls.settle()
        return cancelled

    assert asyncio.run(scenario()) == ["fc-1"]


def test_a_failed_cancellation_is_logged_and_the_close_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async def cancel(call_id: str) -> None:
            raise ConnectionError("Modal unreachable")

        calls = StreamCalls(cancel)
        left = calls.followed(_remote_gen(ITEMS))
        await anext(left)
        await left.aclose()
        await calls.settle()

    with caplog.at_level(logging.WARNING, logger="hybrid_serve.modal.streams"):
        asyncio.run(scenario())
    assert "could not cancel the stream's call fc-1 (ConnectionError" in caplog.text


def test_the_first_item_names_the_call_only_when_the_container_knows_it() -> None:
    assert named({"prediction": 1}, None) == {"prediction": 1}
    assert named({"prediction": 1}, "fc-9") == {"prediction": 1, CALL_ID: "fc-9"}

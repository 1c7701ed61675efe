"""A stream nobody reads any more is released: one whose caller left before it started (the task that
started it is cancelled late), one closed before it was ever read, one closed right after its start."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Awaitable, Callable

from core.serving.streaming import Guarded, StreamEnd, close_if_orphaned


async def _items():
    yield StreamEnd("text", 1, 1.0)


def _recorder() -> tuple[list[BaseException | None], Callable[[BaseException | None], Awaitable[None]]]:
    """What a stream's `on_end` was called with, each time, and the `on_end` that records it."""
    ended: list[BaseException | None] = []

    async def on_end(error: BaseException | None) -> None:
        ended.append(error)

    return ended, on_end


def test_a_stream_started_for_a_caller_that_left_is_closed() -> None:
    ended, on_end = _recorder()

    async def scenario() -> None:
        async def start() -> SimpleNamespace:
            await asyncio.sleep(0.01)
            return SimpleNamespace(items=Guarded(_items(), on_end))

        task = asyncio.ensure_future(start())
        close_if_orphaned(task)  # its caller left: nobody will read what it returns
        await task
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert len(ended) == 1 and isinstance(ended[0], GeneratorExit)


def test_a_guarded_stream_never_read_still_ends_once_when_closed() -> None:
    ended, on_end = _recorder()

    async def scenario() -> None:
        guarded = Guarded(_items(), on_end)
        await guarded.aclose()
        await guarded.aclose()  # once only
        assert [item async for item in guarded] == []

    asyncio.run(scenario())
    assert len(ended) == 1


def test_a_guarded_stream_read_to_its_end_ends_without_an_error() -> None:
    ended, on_end = _recorder()

    async def scenario() -> None:
        guarded = Guarded(_items(), on_end)
        assert [type(item).__name__ async for item in guarded] == ["StreamEnd"]
        assert isinstance(guarded.last, StreamEnd)

    asyncio.run(scenario())
    assert ended == [None]

"""A live registry's background work: its polls, and the one-off tasks it starts, ended together.

Why this module exists: a registry is followed by two polls on their own clocks (the source's stamp
every second; moving sources every half minute, since a tracking server may take minutes to answer)
and by one-off tasks (resolving a newly added alias). None may die of an error — the next poll
retries — and all must end when the server stops, without waiting for a hung call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Coroutine

log = logging.getLogger("hybrid_serve.registry")


class RegistryTasks:
    """The polls and background tasks of one live registry (on the running event loop)."""

    def __init__(self) -> None:
        self._polls: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    def poll(self, every: list[tuple[str, Callable[[], Awaitable[Any]], float]]) -> None:
        """Start one poll per (name, step, every_s), unless they run already."""
        if not self._polls:
            loop = asyncio.get_running_loop()
            self._polls = [loop.create_task(_poll(step, every_s), name=name) for name, step, every_s in every]

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background (kept referenced until it ends; cancelled by `close`)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        tasks = [*self._polls, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._polls = []


async def _poll(step: Callable[[], Awaitable[Any]], every_s: float) -> None:
    while True:
        try:
            await step()
        except Exception:  # never let the watcher die: the next poll retries
            log.exception("registry poll failed")
        await asyncio.sleep(every_s)

"""Refreshes of a registry run one at a time, and a flood of callers shares one.

Why this module exists: a registry is refreshed by its poll, by every write through it, and by
look-ups of unknown experiment ids (the experiment may have just been added). Two refreshes at once
would apply their reads out of order; a thousand look-ups of unknown ids must not cost a thousand
reads. `SerialRefresh` runs refreshes in the order they begin, and `shared` lets a caller wait for
one that begins after it arrived — with everyone else who arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")


class SerialRefresh(Generic[T]):
    """Runs `refresh(force)` one at a time; `lock` is held while one runs (others that change what is
    served take it too)."""

    def __init__(self, refresh: Callable[[bool], Awaitable[T]]):
        self._refresh = refresh
        self.lock = asyncio.Lock()
        self._shared = asyncio.Lock()
        self._begun = 0  # refreshes begun (one at a time, so they finish in that order)
        self._finished = 0  # the number of the last one finished

    async def __call__(self, force: bool = False) -> T:
        async with self.lock:
            self._begun += 1
            try:
                return await self._refresh(force)
            finally:
                self._finished = self._begun

    async def shared(self) -> None:
        """A refresh that started after this call, shared: callers that arrive while one runs wait
        for the next and share it, so a flood costs one refresh at a time."""
        arrived = self._begun
        async with self._shared:
            if self._finished > arrived:
                return  # one that began after we arrived has finished
            await self()

"""A client that hangs up cancels its own request: its inputs never reach the model.

Why this module exists: a request may wait long (a cold start, a full queue); a client that gave up
meanwhile must not cost a forward pass. The route's work runs next to a watcher of the connection,
and whichever ends first decides: the answer, or `ClientGone` (answered 499, to nobody).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from fastapi import Request


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Run `work`, cancelling it if the client hangs up first: its inputs never reach the model."""
    task = asyncio.ensure_future(work)

    async def hung_up() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(hung_up())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        raise ClientGone
    return task.result()

"""A client that hangs up cancels its own request: its inputs never reach the model.

Why this module exists: a request may wait long (a cold start, a full queue); a client that gave up
meanwhile must not cost a forward pass. The route's work runs in the request's own task; a watcher
of the connection starts only once the work has taken `WATCH_AFTER_S` (most warm requests end
sooner, and a watcher task per request was a good part of the API's overhead). Whichever ends first
decides: the answer, or `ClientGone` (answered 499, to nobody). A disconnect that came meanwhile
is still queued on the connection, so the watcher finds it as soon as it starts.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from fastapi import Request

#: How long a request's work runs before its connection is watched (a warm request ends sooner).
WATCH_AFTER_S = 0.02


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[Any], watch_after_s: float = WATCH_AFTER_S) -> Any:
    """Await `work`, cancelling it if the client hangs up first: its inputs never reach the model."""
    current = asyncio.current_task()
    assert current is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def hung_up() -> None:
        nonlocal gone
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone = True
                current.cancel()
                return

    def watch() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(hung_up())

    timer = asyncio.get_running_loop().call_later(watch_after_s, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and current.uncancel() == 0:  # cancelled by the watcher alone, not by the server
            raise ClientGone from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()

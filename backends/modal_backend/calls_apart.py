"""Model calls that go on apart from their requests: a cold start past Modal's web limit.

Why this module exists: Modal ends a web request after 150 s, so a request still waiting for its
container is answered 503 + Retry-After before that — but its input stays with the container Modal
started for it, which keeps starting for the retry. Such a call goes on, its answer dropped, until
its container answers or HYBRID_COLD_START_TIMEOUT_S runs out; the ingress cancels what is left when
it stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("hybrid_serve.modal.ingress")


class CallsApart:
    def __init__(self) -> None:
        self._calls: set[asyncio.Future[Any]] = set()

    def __len__(self) -> int:
        return len(self._calls)

    def keep(self, call: "asyncio.Future[Any]", limit_s: float) -> None:
        """Let `call` finish on its own (its answer dropped), cancelled after `limit_s`."""
        if call.done():
            return
        self._calls.add(call)
        timer = asyncio.get_running_loop().call_later(max(0.0, limit_s), call.cancel)

        def finished(done: "asyncio.Future[Any]") -> None:
            timer.cancel()
            self._calls.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.warning("a model call finished apart from its request failed: %s", done.exception())

        call.add_done_callback(finished)

    async def cancel_all(self) -> None:
        """The ingress stops: the calls still going on are cancelled (their inputs go)."""
        calls = list(self._calls)
        for call in calls:
            call.cancel()
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)

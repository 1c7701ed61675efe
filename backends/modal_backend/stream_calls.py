"""A streamed generation on Modal whose client left: its function call is cancelled by its id.

Why this module exists: closing the generator `remote_gen` returns only stops reading — Modal's client
sends no cancellation, and the container's generator would run to its last token, holding its batch
slot and its GPU for nobody. So the model container names its input's function call in the stream's
first item (`modal.current_function_call_id()`), and the ingress, when a stream ends before its last
item (the client hung up, the server stops), cancels that call (`FunctionCall.cancel`): Modal cancels
the input's task in the container, which stops the generation at its next token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from core.serving.streaming import aclose

log = logging.getLogger("hybrid_serve.modal.streams")

#: The first item's key naming the container's function call.
CALL_ID = "call_id"
#: `cancel(function_call_id)`: modal.FunctionCall.from_id(id).cancel.aio — Modal's network call.
CancelCall = Callable[[str], Awaitable[None]]


def named(first: dict[str, Any], call_id: str | None) -> dict[str, Any]:
    """The stream's first item, naming its function call (in the container)."""
    return first if call_id is None else {**first, CALL_ID: call_id}


class StreamCalls:
    """The ingress's side: streams that cancel their function call when left early."""

    def __init__(self, cancel: CancelCall | None):
        self._cancel = cancel
        self._cancelling: set[asyncio.Task[None]] = set()  # held until done (a task nobody holds may be collected)

    async def followed(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """`items` (a `remote_gen`) as they come; left before their end, the call they name is cancelled —
        in the background, so that a client's hang-up is not held up by Modal's answer."""
        call_id: str | None = None
        ended = False
        try:
            async for item in items:
                if call_id is None and isinstance(item, dict):
                    call_id = item.get(CALL_ID)
                yield item
            ended = True
        finally:
            await aclose(items)
            if not ended and call_id is not None and self._cancel is not None:
                task = asyncio.get_running_loop().create_task(self._cancelled(call_id))
                self._cancelling.add(task)
                task.add_done_callback(self._cancelling.discard)

    async def _cancelled(self, call_id: str) -> None:
        try:
            await self._cancel(call_id)  # type: ignore[misc]
        except Exception as exc:  # the generation runs to its end (bounded by max_new_tokens): logged, not raised
            log.warning("could not cancel the stream's call %s (%s: %s); it runs to its last token",
                        call_id, type(exc).__name__, exc)

    async def settle(self) -> None:
        """Wait for the cancellations under way (tests, shutdown)."""
        await asyncio.gather(*self._cancelling, return_exceptions=True)

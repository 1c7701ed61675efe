"""A streamed generation on Modal whose client left: its function call is cancelled by its id.

Why this module exists: closing the generator `remote_gen` returns only stops reading — Modal's client
sends no cancellation, and the container's generator would run to its last token, holding its batch
slot and its GPU for nobody. So the model container's stream begins with an item naming its input's
function call (`modal.current_function_call_id()`) — before the generation waits for the model — and
the ingress, when a stream is left before its end (the client hung up, the server stops, Modal's web
limit came first), cancels that call (`FunctionCall.cancel`): Modal cancels the input's task in the
container, which stops the generation at its next token. An input still queued for a container that
is starting has named no call yet: it runs on, as a prediction left at the web limit does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from core.serving.remote import is_error_value
from core.serving.streaming import StreamEnd, aclose

log = logging.getLogger("hybrid_serve.modal.streams")

#: The key of the stream's first item, naming the container's function call.
CALL_ID = "call_id"
#: `cancel(function_call_id)`: modal.FunctionCall.from_id(id).cancel.aio — Modal's network call.
CancelCall = Callable[[str], Awaitable[None]]
#: How long a stopping ingress waits for the cancellations it sent.
SETTLE_S = 5.0


def call_named(call_id: str) -> dict[str, str]:
    """The item a container's stream begins with (dropped by the ingress before the request path)."""
    return {CALL_ID: call_id}


def _last(item: Any) -> bool:
    """The stream's last item: its end, or an error as a value (the container's generator ends there)."""
    return isinstance(item, StreamEnd) or is_error_value(item)


class StreamCalls:
    """The ingress's side: streams that cancel their function call when left early."""

    def __init__(self, cancel: CancelCall | None):
        self._cancel = cancel
        self._cancelling: set[asyncio.Task[None]] = set()  # held until done (a task nobody holds may be collected)

    async def followed(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """`items` (a `remote_gen`) without the item naming their call; left before their last item, that
        call is cancelled — in the background, so that a client's hang-up is not held up by Modal."""
        call_id: str | None = None
        ended = False
        try:
            async for item in items:
                if call_id is None and isinstance(item, dict) and CALL_ID in item:
                    call_id = item[CALL_ID]
                    continue
                ended = _last(item)
                yield item
        finally:
            try:
                if not ended and call_id is not None and self._cancel is not None:
                    task = asyncio.get_running_loop().create_task(self._cancelled(call_id))
                    self._cancelling.add(task)
                    task.add_done_callback(self._cancelling.discard)
            finally:
                await aclose(items)

    async def _cancelled(self, call_id: str) -> None:
        try:
            await self._cancel(call_id)  # type: ignore[misc]
        except Exception as exc:  # the generation runs to its end (bounded by max_new_tokens): logged, not raised
            log.warning("could not cancel the stream's call %s (%s: %s); it runs to its last token",
                        call_id, type(exc).__name__, exc)

    async def settle(self, timeout_s: float = SETTLE_S) -> None:
        """Wait for the cancellations under way, at most `timeout_s` (tests, shutdown)."""
        if self._cancelling:
            await asyncio.wait(set(self._cancelling), timeout=timeout_s)

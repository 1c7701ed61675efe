"""The request body's limits, enforced while it streams: 413 when too large, 408 when it stalls.

Why this module exists: a route reads its body only after the whole of it arrived, too late to
refuse a client that sends gigabytes or one byte a minute. This middleware counts the body as it
streams and refuses it at the first byte over `HYBRID_MAX_BODY_BYTES` (or at once, by Content-Length)
or after `HYBRID_BODY_TIMEOUT_S` without a chunk, in the API's error shape, closing the connection.
"""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.http.error_shape import error_body


class BodyLimits:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length or while streaming, and
    bodies that stall for `timeout_s` between two chunks with 408."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        failed: tuple[int, str, str] | None = None
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, failed, body_done
            if body_done:  # after the body: only a disconnect can come, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_s):  # a timer, not a task per chunk (wait_for's)
                    message = await receive()
            except TimeoutError:
                failed = (408, "request_timeout", f"the request body stalled for {self.timeout_s:g}s (HYBRID_BODY_TIMEOUT_S)")
                raise _BodyRefused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    failed = (413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes (HYBRID_MAX_BODY_BYTES)")
                    raise _BodyRefused
            return message

        async def guarded_send(message: Message) -> None:
            if failed is None:  # once the body is refused, whatever the app answers is replaced
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyRefused:
            pass
        if failed is not None:
            status, error_type, message = failed
            await JSONResponse(error_body(error_type, message), status_code=status,
                               headers={"Connection": "close"})(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes (HYBRID_MAX_BODY_BYTES)"
        await JSONResponse(error_body("payload_too_large", message), status_code=413)(scope, receive, send)


class _BodyRefused(Exception):
    """Raised into the app when its body is refused: unwinds the route, whose answer is replaced."""

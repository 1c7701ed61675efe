"""ASGI middlewares in front of every route: unexpected errors, the request body's limits, the token.

Why this module exists: each must act outside the routes — an unexpected error becomes one JSON 500
and one log line (not a traceback, not a dropped keep-alive connection), an oversized or stalled
body is refused while it streams (413, 408), an unauthenticated request never reaches the model —
and all answer with the same JSON error shape as the routes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.serving.scrub import reason, scrub_tree


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape of the API: `{"error": {"type", "message", …}}`, credentials scrubbed."""
    return {"error": scrub_tree({"type": error_type, "message": message, **extra})}


log = logging.getLogger("hybrid_serve.api")


class UnexpectedErrors:
    """Turns an exception no handler knew into a 500 JSON answer with a request id, logged in one line.
    (Starlette's own last resort re-raises after answering: two tracebacks and a closed connection.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            request_id = uuid.uuid4().hex[:16]
            log.error("request %s %s %s failed: %s: %s", request_id, scope.get("method"), scope.get("path"),
                      type(exc).__name__, reason(exc))
            if started:
                return
            body = error_body("internal_error", f"unexpected {type(exc).__name__}; see the server log", request_id=request_id)
            await JSONResponse(body, status_code=500, headers={"X-Request-ID": request_id})(scope, receive, send)


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
                message = await asyncio.wait_for(receive(), self.timeout_s)
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
    pass


class BearerToken:
    """Requires `Authorization: Bearer <token>` on every route. `GET /health` without the token answers
    only a bare liveness status (for load balancers' probes): the details are what the token protects.
    Any other method there is refused like any route (no answer tells more without the token)."""

    LIVENESS_PATH = "/health"
    LIVENESS_METHODS = ("GET", "HEAD")

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            scheme, _, token = given.partition(b" ")  # the scheme is case-insensitive (RFC 9110)
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)):
                if scope["path"] == self.LIVENESS_PATH and scope.get("method") in self.LIVENESS_METHODS:
                    await JSONResponse({"status": "ok"})(scope, receive, send)
                    return
                body = error_body("unauthorized", "missing or wrong bearer token (Authorization: Bearer <HYBRID_API_TOKEN>)")
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)

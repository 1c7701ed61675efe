"""ASGI middlewares in front of every route: the request body limit and the bearer token.

Why this module exists: both must act before FastAPI parses a body or runs a route — an oversized
body is refused while it streams, an unauthenticated request never reaches the model — and both
answer with the same JSON error shape as the routes.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape of the API: `{"error": {"type", "message", …}}`."""
    return {"error": {"type": error_type, "message": message, **extra}}


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:  # once the limit is crossed, whatever the app answers is replaced by the 413
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes (HYBRID_MAX_BODY_BYTES)"
        await JSONResponse(error_body("payload_too_large", message), status_code=413)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class BearerToken:
    """Requires `Authorization: Bearer <token>` on every route. `/health` without the token answers
    only a bare liveness status (for load balancers' probes): the details are what the token protects."""

    LIVENESS_PATH = "/health"

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self._expected):
                if scope["path"] == self.LIVENESS_PATH:
                    await JSONResponse({"status": "ok"})(scope, receive, send)
                    return
                body = error_body("unauthorized", "missing or wrong bearer token (Authorization: Bearer <HYBRID_API_TOKEN>)")
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""The bearer token in front of every route (when `HYBRID_API_TOKEN` is set).

Why this module exists: an unauthenticated request must never reach a route, the model or the
registry; checked in a middleware, no route can forget it. The comparison takes constant time, and
the refusal has the API's error shape.
"""

from __future__ import annotations

import hmac
from typing import Collection

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core.http.error_shape import error_body


class BearerToken:
    """Requires `Authorization: Bearer <token>` on every route. `GET /health` without the token answers
    only a bare liveness status (for load balancers' probes): the details are what the token protects.
    Any other method there is refused like any route (no answer tells more without the token).
    `public`: paths whose GET answers without the token because it holds no data — the dashboard's page
    and its assets, which a browser loads before it can send a token (the page's data needs it)."""

    LIVENESS_PATH = "/health"
    LIVENESS_METHODS = ("GET", "HEAD")

    def __init__(self, app: ASGIApp, token: str, public: Collection[str] = ()):
        self.app = app
        self._token = token.encode()
        self._public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            scheme, _, token = given.partition(b" ")  # the scheme is case-insensitive (RFC 9110)
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)):
                if scope["path"] == self.LIVENESS_PATH and scope.get("method") in self.LIVENESS_METHODS:
                    await JSONResponse({"status": "ok"})(scope, receive, send)
                    return
                if scope["path"] in self._public and scope.get("method") in self.LIVENESS_METHODS:
                    await self.app(scope, receive, send)
                    return
                body = error_body("unauthorized", "missing or wrong bearer token (Authorization: Bearer <HYBRID_API_TOKEN>)")
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""The outermost middleware: an exception no handler knew becomes one JSON 500 and one log line.

Why this module exists: Starlette's own last resort re-raises after answering — two tracebacks in
the log and a dropped keep-alive connection. Here the client gets the API's error shape with a
request id, and the log gets one line naming the same id (its text scrubbed of credentials).
"""

from __future__ import annotations

import logging
import uuid

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.http.error_shape import error_body
from core.serving.scrub import reason

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

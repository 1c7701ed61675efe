"""An ingress that refuses every request: what a deployment serves when its protection is missing.

Why this module exists: a deploy that names a bearer-token secret (HYBRID_API_TOKEN_SECRET) turns
Modal's proxy auth off, so the token is the only lock. If the container then finds no token (the
secret lost its key after the deploy, or was replaced), serving would mean serving to anyone. The
deploy asks Modal to refuse a secret without the key (`required_keys`); this is the container's own
check behind it: every request answers 503 in the API's error shape, and one log line says why.
A client learns only that the deployment is misconfigured — never which secret or key.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from backends.modal_backend.deploy_config import TOKEN_KEY
from core.http.error_shape import error_body

log = logging.getLogger("hybrid_serve.modal.fail_closed")

#: What a client is told (the reason itself goes to the log only).
CLIENT_MESSAGE = ("this deployment's authentication is misconfigured, so it refuses every request; "
                  "its operator will find the reason in the ingress's log")


def refusing_app(reason: str) -> ASGIApp:
    """An ASGI app answering 503 to every HTTP request; `reason` is logged once, now."""
    log.error("refusing to serve: %s", reason)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            response = JSONResponse(error_body("misconfigured", CLIENT_MESSAGE), status_code=503,
                                    headers={"Retry-After": "60"})
            await response(scope, receive, send)

    return app


def missing_protection(api_token_secret: str | None, has_token: bool) -> str | None:
    """Why the ingress must not serve (None: it may): a token secret named, but no token found."""
    if api_token_secret and not has_token:
        return (f"HYBRID_API_TOKEN_SECRET names the modal.Secret {api_token_secret!r}, but this container has no "
                f"{TOKEN_KEY}: add the key (modal secret create {api_token_secret} {TOKEN_KEY}=<token> --force) "
                "and redeploy; serving without it would serve to anyone")
    return None

"""Serve's HTTP proxy as hybrid-serve runs it: its own endpoints behind the token, and every answer
delivered before it goes.

Why this module exists: Serve's proxy answers two paths itself, before any application sees them —
`/-/routes` (the name and route of every application) and `/-/healthz` — so the bearer token the
ingress checks (HYBRID_API_TOKEN) never guarded them, and Serve has no setting to turn them off. Its
one hook into the proxy is `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, a function returning
Starlette middlewares wrapped around the proxy's ASGI app: `middlewares` returns one that hands
these two paths to the application like any other path, so the ingress answers them — 401 without
the token (when one is set), else 404 (`GET /health` is the liveness probe). And on Ctrl-C, Serve's
shutdown kills the proxies at once: `wait_delivered` first waits until they have sent every answer
the ingress gave (Serve's own drain state), so no client is left with a closed connection.

Both take effect where hybrid-serve starts Ray itself (the proxies inherit the driver's
environment); on a cluster it joins, the proxies are the cluster's and stay as they are.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths Serve's proxy would answer itself, with what the proxy sees instead: a path of the application's.
SERVE_PATHS = {"/-/routes": "/-/routes/", "/-/healthz": "/-/healthz/"}
#: A proxy marked draining reports drained once no request is ongoing and this long has passed (Serve: 30 s).
MIN_DRAINING_S = 0.1


def proxy_environment() -> dict[str, str]:
    """What Serve's proxies of a Ray instance started here need in their environment."""
    return {
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": f"{__name__}:middlewares",
        "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": str(MIN_DRAINING_S),
    }


class ServePathsToApplication:
    """Renames `/-/routes` and `/-/healthz` so that the proxy routes them to the application."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        renamed = SERVE_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if renamed is not None:
            scope = {**scope, "path": renamed, "raw_path": renamed.encode()}
        await self.app(scope, receive, send)


def middlewares() -> list[Middleware]:
    """Serve's proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH)."""
    return [Middleware(ServePathsToApplication)]


def wait_delivered(timeout_s: float, poll_s: float = 0.05) -> bool:
    """Whether every proxy of the Serve instance this driver is connected to has sent all its answers
    (within `timeout_s`). Marked draining, a proxy keeps serving (its `/-/healthz` would say 503)."""
    import ray
    from ray.serve.context import _get_global_client

    proxies: list[Any] = list(ray.get(_get_global_client()._controller.get_proxies.remote()).values())
    ray.get([proxy.update_draining.remote(True) for proxy in proxies])
    deadline = time.monotonic() + timeout_s
    while not all(ray.get([proxy.is_drained.remote() for proxy in proxies])):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True

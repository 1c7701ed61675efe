"""Running an ASGI app with uvicorn and announcing it only once it accepts requests.

Why this module exists: the main job prints the address and a ready-to-paste `curl` — printing it
before the socket is bound would invite a "connection refused". Backends that run their own HTTP
server (Ray Serve's proxy) reuse `ready_message` so the announcement reads the same everywhere.
"""

from __future__ import annotations

import math
import shlex
from typing import Callable

import uvicorn
from fastapi import FastAPI

from core.http.protocol import header_deadline_protocol
from core.serving import detached


def curl_example(host: str, port: int, experiment_id: str) -> str:
    body = '{"inputs": ["hybrid-serve keeps GPUs warm only while it pays"]}'
    url = f"http://{host}:{port}/predict/{experiment_id}"
    return f"curl -s -X POST {url} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def ready_message(host: str, port: int, experiment_id: str | None, backend: str) -> str:
    lines = [f"hybrid-serve ({backend}) is serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)"]
    if experiment_id:
        lines.append(f"try:  {curl_example(host, port, experiment_id)}")
    lines.append(f"state: curl -s http://{host}:{port}/health")
    return "\n".join(lines)


class _Server(uvicorn.Server):
    """uvicorn's server, announcing readiness, and refusing what waits as soon as shutdown starts."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None], on_shutdown: Callable[[], None]):
        super().__init__(config)
        self._on_ready = on_ready
        self._on_shutdown = on_shutdown

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._on_shutdown()  # queued requests get 503 now; the ones running finish (within the deadline)
        await super().shutdown(sockets)


def run_uvicorn(app: FastAPI, host: str, port: int, on_ready: Callable[[], None]) -> None:
    """Serve until Ctrl-C (or SIGTERM); `on_ready` runs once the socket accepts connections. On the way
    out, requests still waiting get 503 — those waiting for an MLflow call too, which is left to its
    daemon thread —, running ones get HYBRID_SHUTDOWN_TIMEOUT_S to finish."""
    path = app.state.request_path
    settings = path.settings
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            http=header_deadline_protocol(settings.header_timeout_s),
                            timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_timeout_s)))

    def stopping() -> None:
        path.begin_shutdown()
        detached.stop_all()  # nothing this process waits for on another server holds its exit

    try:
        _Server(config, on_ready, stopping).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: that is a clean stop
        pass

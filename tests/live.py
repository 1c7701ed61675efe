"""A real uvicorn server on a free loopback port, in a background thread, for tests over HTTP —
configured as `hybrid-serve serve` configures it (the header deadline, graceful shutdown)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn
from fastapi import FastAPI

from core.http.protocol import header_deadline_protocol


@contextmanager
def live_server(app: FastAPI, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port>; yields the base URL; stops the server on exit."""
    settings = app.state.request_path.settings
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            http=header_deadline_protocol(settings.header_timeout_s), timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)

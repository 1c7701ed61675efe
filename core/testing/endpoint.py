"""`local_endpoint`: the local backend up on a free port for one test, always torn down after it.

Why this module exists: a user's integration test should need one `with` statement — start the
emulator with my registry and settings, wait until it answers, give me a client, and remove
everything it deployed however the test ends (a failed assertion, an exception, Ctrl-C). What is
costly to start and safe to share (Ray itself) stays up for the next endpoint of the session.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import httpx

from core.settings import Settings
from core.testing.backends import EndpointError, LocalBackend, Started, backend, close_backends
from core.testing.clock import EmulatedClock
from core.testing.config import EndpointConfig, RegistrySpec, endpoint_settings, registry_file
from core.testing.expectations import Expectations
from core.testing.process import free_port

__all__ = ["Endpoint", "close_backends", "local_endpoint", "open_endpoint"]
HOST = "127.0.0.1"

_open: set[str] = set()  # backends with an endpoint open: Serve routes "/" to one application only
_open_lock = threading.Lock()


class Endpoint(Expectations):
    """A running endpoint: the client, the waits and assertions, its emulated clock and its settings."""

    def __init__(self, url: str, settings: Settings, backend: str, emulates_windows: bool, details: dict[str, Any]):
        super().__init__(url, settings)
        self.backend = backend
        self.emulates_windows = emulates_windows
        self.clock = EmulatedClock(settings.time_scale)
        #: What the backend reports (Ray: `started_ray` — whether this endpoint paid Ray's start —, `node_id`).
        self.details = details

    def __repr__(self) -> str:
        return f"Endpoint({self.backend}, {self.url}, time scale {self.clock.time_scale:g})"


@contextmanager
def local_endpoint(registry: RegistrySpec = None, *, settings: Mapping[str, Any] | None = None, time_scale: float = 1.0,
                   backend: str = "ray", name: str | None = None, startup_timeout_s: float = 300.0) -> Iterator[Endpoint]:
    """Start the local backend with `registry` (a file, or entries `{id: {"source": ..., "task": ...}}`),
    `settings` and `time_scale` on a free port; yield an `Endpoint` once it answers; remove everything
    it deployed when the block ends, however it ends. See `EndpointConfig` for each argument."""
    config = EndpointConfig(registry, dict(settings or {}), time_scale, backend, name, startup_timeout_s)
    with open_endpoint(config) as endpoint:
        yield endpoint


@contextmanager
def open_endpoint(config: EndpointConfig) -> Iterator[Endpoint]:
    """`local_endpoint` for a ready-made `EndpointConfig` (what the pytest fixture uses)."""
    folder = Path(tempfile.mkdtemp(prefix="hybrid-serve-test-"))
    try:
        settings = endpoint_settings(config, registry_file(config.registry, folder), folder / "events.jsonl")
        runner = backend(config.backend)
        with _exclusive(config.backend, runner.one_at_a_time):
            started = _start(runner, settings, config)
            try:
                endpoint = Endpoint(started.url, settings, config.backend, runner.emulates_windows, started.details)
                try:
                    _wait_until_ready(endpoint, config.startup_timeout_s)
                    yield endpoint
                finally:
                    endpoint.close()
            finally:
                runner.stop(started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start(runner: LocalBackend, settings: Settings, config: EndpointConfig) -> Started:
    name = config.name or f"hybrid-serve-test-{uuid.uuid4().hex[:8]}"
    return runner.start(settings, HOST, free_port(), name, config.startup_timeout_s)


@contextmanager
def _exclusive(backend_name: str, one_at_a_time: bool) -> Iterator[None]:
    if not one_at_a_time:
        yield
        return
    with _open_lock:
        if backend_name in _open:
            raise EndpointError(f"an endpoint on the {backend_name!r} backend is already open in this process: "
                                "open one at a time (close the first `with` block before the next)")
        _open.add(backend_name)
    try:
        yield
    finally:
        with _open_lock:
            _open.discard(backend_name)


def _wait_until_ready(endpoint: Endpoint, timeout_s: float) -> None:
    """Until GET /health answers 200 (Serve's proxy may route a new application a moment later)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = endpoint.http.get("/health", timeout=10)
            if response.status_code == 200:
                return
            last = f"{response.status_code}: {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise EndpointError(f"the endpoint at {endpoint.url} did not answer GET /health within {timeout_s:g} s ({last})")

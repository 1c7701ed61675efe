"""The local Ray backend of the testing kit (core.testing): one Ray instance per test session.

Why this module exists: a user's tests open an endpoint per test or per module; paying Ray's
start-up (several seconds) for each would make them slow. The first endpoint starts a private Ray
instance and Serve and keeps them; each endpoint deploys its own uniquely named application and, when
it ends, removes only that application, its pools, its registry keeper and its experiments' published activity; the
kit's `close` (the end of the test session) shuts Serve and Ray down. Found by the kit through the
`hybrid_serve.test_backends` entry point, so core never imports it.

The kit's Ray instance keeps no warm workers unless `HYBRID_WARM_WORKERS` says so (the server's
default keeps a few): with warm workers every process of the instance imports the model stack, and a
test session starts many (each endpoint's ingress and registry keeper, each pool's replicas) — the
kit's and the hostile Ray tests took 148 CPU-seconds with them, 92 without.
"""

from __future__ import annotations

import time

from core.serving.registry import Registry
from core.settings import Settings
from core.testing.backends import Started

from backends.local_ray import runner
from backends.local_ray.settings import ray_settings


class RayTestBackend:
    emulates_windows = True
    one_at_a_time = True  # Serve routes "/" to one application

    def __init__(self) -> None:
        self._connected = False  # this backend started (or joined) the Ray instance it holds

    def start(self, settings: Settings, host: str, port: int, name: str, timeout_s: float) -> Started:
        import ray

        began = time.monotonic()
        if getattr(settings, "warm_workers", None) is None:  # unset: none for a test session (module docstring)
            settings = ray_settings(settings, warm_workers=0)
        was_up = ray.is_initialized()
        try:
            running = runner.start(settings, Registry.load(settings.registry_path), host, port, name, keep_ray=True,
                                   verbose=False)  # a test run shows Ray's and Serve's warnings, not their INFO lines
        finally:  # Ray started here stays held, also when this application failed to deploy
            if not was_up and ray.is_initialized():
                self._connected = True
        context = ray.get_runtime_context()
        details = {"started_ray": running.started_ray, "node_id": context.get_node_id(),
                   "gcs_address": context.gcs_address, "app_name": name, "start_s": time.monotonic() - began}
        return Started(f"http://{running.url}", running, details)

    def stop(self, started: Started) -> None:
        runner.stop(started.handle)

    def close(self) -> None:
        """Shut down Serve and the private Ray instance this backend started; leave a joined cluster."""
        import ray

        if self._connected and ray.is_initialized():
            # a private instance stops, Serve with it (no controller killed under its own tasks); from a
            # joined cluster this driver disconnects (each endpoint removed what it deployed there)
            ray.shutdown()
        self._connected = False

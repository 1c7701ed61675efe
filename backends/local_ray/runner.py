"""`hybrid-serve serve --backend ray`: start (or join) Ray, deploy the emulator, serve until Ctrl-C.

Why this module exists: the main job must come up with one command and go down with Ctrl-C leaving
no process behind. Locally it starts a private Ray instance; with `RAY_ADDRESS` set it joins that
cluster (how users go past one machine) and, on exit, removes only its own Serve application.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from core.auth import auth_mode
from core.http.runner import ready_message
from core.serving.registry import Registry
from core.settings import Settings

from backends.local_ray.app import build_application, ray_environment
from backends.local_ray.ingress import APP_NAME


def start(settings: Settings, registry: Registry, host: str, port: int) -> None:
    """Start or join Ray, start Serve's HTTP proxy on host:port, deploy the application."""
    import ray
    from ray import serve

    env = ray_environment()
    for key, value in env.items():
        os.environ.setdefault(key, value)  # processes of a local Ray instance inherit this environment
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None,
        runtime_env={"env_vars": env},
        include_dashboard=False,
        logging_level="WARNING",
        configure_logging=True,
    )
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(settings, registry, auth_mode(settings)), name=APP_NAME, route_prefix="/")


def stop() -> None:
    import ray
    from ray import serve

    try:
        if os.environ.get("RAY_ADDRESS"):
            serve.delete(APP_NAME)  # on a shared cluster remove only what we deployed
        else:
            serve.shutdown()
    finally:
        ray.shutdown()


def run(settings: Settings, host: str, port: int, **_: Any) -> None:
    """The main job on the local Ray backend."""
    registry = Registry.load(settings.registry_path)
    start(settings, registry, host, port)
    print(ready_message(host, port, registry.first_id(), "ray"), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        stopped.wait()
    finally:
        print("shutting down Serve and Ray ...", flush=True)
        stop()
        print("stopped.", flush=True)

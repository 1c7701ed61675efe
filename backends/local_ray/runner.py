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
from core.settings import SECRET_VARIABLES, Settings

from backends.local_ray.app import build_application, ray_environment
from backends.local_ray.ingress import APP_NAME


def start(settings: Settings, registry: Registry, host: str, port: int) -> None:
    """Start or join Ray, start Serve's HTTP proxy on host:port, deploy the application."""
    import ray
    from ray import serve

    env = ray_environment()
    for key, value in env.items():
        os.environ.setdefault(key, value)  # processes of a local Ray instance inherit this environment
    for secret in SECRET_VARIABLES:  # ... so secrets leave it first: the settings already hold them
        os.environ.pop(secret, None)
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


def wait_until_stopped(stopped: threading.Event, poll_s: float = 0.5) -> None:
    """Wait for a stop signal. Python runs signal handlers only in the main thread, between bytecodes:
    a signal delivered to another thread (Ray has many) must not find the main thread blocked in an
    untimed wait, or it is never handled — so the wait wakes up every `poll_s`."""
    while not stopped.wait(poll_s):
        pass


def run(settings: Settings, host: str, port: int, **_: Any) -> None:
    """The main job on the local Ray backend."""
    registry = Registry.load(settings.registry_path)
    start(settings, registry, host, port)
    print(ready_message(host, port, registry.first_id(), "ray"), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        wait_until_stopped(stopped)
    finally:
        print("shutting down Serve and Ray ...", flush=True)
        stop()
        print("stopped.", flush=True)

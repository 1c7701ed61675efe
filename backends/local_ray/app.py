"""The Serve application of the emulator's front door: the HTTP ingress.

Why this module exists: the main application is the ingress alone (core's HTTP API on Serve); each
experiment's pool is an application of its own (pool.py), deployed by the ingress on the
experiment's first request. The ingress gets the settings without any token it does not need, and
finds the registry through the keeper actor (registry_keeper.py).
"""

from __future__ import annotations

from typing import Any

from ray import serve

from backends.local_ray.ingress import HybridIngress
from backends.local_ray.pool import deployment_settings
from backends.local_ray.settings import RaySettings
from core.auth import AuthMode


#: The ingress's deployment (the driver calls it through a handle to drain it on Ctrl-C).
INGRESS_DEPLOYMENT = "ingress"


def build_application(settings: RaySettings, mode: AuthMode, app_name: str) -> Any:
    """The bound ingress application (deploy it with `serve.run(..., name=app_name)`). Tokens stay out of it."""
    ingress = serve.deployment(serve.ingress()(HybridIngress), name=INGRESS_DEPLOYMENT, num_replicas=1,
                               ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
                               graceful_shutdown_wait_loop_s=0.2)  # gone 0.2 s after its last request, not 2 s
    return ingress.bind(deployment_settings(settings, ingress=True), mode.value, app_name)

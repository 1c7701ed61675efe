"""One experiment's pool of replicas: its own Serve application, deployed on its first request.

Why this module exists: it states, in one place, how Modal's per-experiment container pool is
emulated — an application of one autoscaled deployment that starts at zero replicas, may grow to one
experiment's container cap within the deployment's (replica_slots.py), and is scaled by
`ScaledownWindowPolicy` with Serve's own delays turned off
(the policy is the only clock), a short look-back so load is seen within a second, and a graceful
shutdown that lets requests in flight finish. Each replica asks Ray for the CPUs and memory it uses
(`HYBRID_REPLICA_CPUS`, `HYBRID_REPLICA_MEMORY_MB`). One application per experiment, so that adding,
changing or retiring an experiment touches its pool alone, and one never requested costs nothing.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from pydantic import SecretStr
from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy

from backends.local_ray.replica import ExperimentReplica
from backends.local_ray.settings import RaySettings, ray_settings
from core.serving.registry import Experiment

#: Serve averages load over this period (default 30 s); short, so scale-up follows load closely.
LOOK_BACK_PERIOD_S = 1.0
#: How often replicas push their reports — and handles their load — to the controller (Serve's
#: default is 10 s; in Ray 2.60 one setting serves both). A report carries timestamps, but a request
#: just before a window ends is seen only with the next report: this bounds the window's precision.
METRICS_PUSH_INTERVAL_S = 0.2
#: No access-log line per request from the ingress and every replica: under load, logging them
#: through Ray's log pipeline cost a third of the throughput. Warnings and errors still show.
SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}
SECRET_FIELDS = {"modal_token_id", "modal_token_secret"}  # the Modal client's: never in a Ray process


def ray_environment() -> dict[str, str]:
    """Environment every Ray process of the emulator needs (metric push intervals)."""
    return {
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": str(METRICS_PUSH_INTERVAL_S),
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": str(METRICS_PUSH_INTERVAL_S),
    }


def replica_resources(settings: RaySettings) -> dict[str, Any]:
    """What Ray reserves for one replica (a container in Modal's terms)."""
    options: dict[str, Any] = {"num_cpus": settings.replica_cpus}
    if settings.replica_memory_mb:
        options["memory"] = settings.replica_memory_mb * 2**20
    return options


#: Serve pickles the autoscaling policy and the request router by value while it builds and deploys an
#: application, registering and unregistering their modules with cloudpickle process-wide: two pools
#: deployed at once (two cold starts, on worker threads) would unregister a module twice (ValueError).
#: One at a time.
_POLICY_PICKLING = threading.RLock()


def autoscaling_config(settings: RaySettings, app_name: str, experiment_id: str) -> AutoscalingConfig:
    with _POLICY_PICKLING, warnings.catch_warnings():  # metrics_interval_s is deprecated but still sets the push period
        warnings.simplefilter("ignore", DeprecationWarning)
        return _autoscaling_config(settings, app_name, experiment_id)


def _autoscaling_config(settings: RaySettings, app_name: str, experiment_id: str) -> AutoscalingConfig:
    return AutoscalingConfig(
        min_replicas=0,
        metrics_interval_s=METRICS_PUSH_INTERVAL_S,
        initial_replicas=0,
        max_replicas=settings.experiment_max_containers,  # the deployment's cap across pools: scaling.py
        target_ongoing_requests=settings.target_ongoing,
        look_back_period_s=LOOK_BACK_PERIOD_S,
        upscale_delay_s=0,
        downscale_delay_s=0,
        downscale_to_zero_delay_s=0,
        policy=AutoscalingPolicy(
            policy_function="backends.local_ray.scaling:ScaledownWindowPolicy",
            # JSON only: the settings as the replicas get them, validated again in the policy (RaySettings)
            policy_kwargs={"experiment": experiment_id, "app_name": app_name,
                           "settings": deployment_settings(settings, ingress=False).model_dump(mode="json")},
        ),
    )


def deployment_settings(settings: RaySettings, ingress: bool) -> RaySettings:
    """The settings a deployment's processes get, validated (pickled as they are): no Modal token anywhere
    (the ingress only learns whether they are set, for /health), and the bearer token only in the
    ingress, which checks it."""
    hidden = {name: SecretStr("held by the driver") if ingress and getattr(settings, name) is not None else None
              for name in SECRET_FIELDS}
    return ray_settings(settings, **hidden, **({} if ingress else {"api_token": None}))


def deployment_name(experiment_id: str) -> str:
    return f"experiment-{experiment_id}"


def pool_app_name(app_name: str, experiment_id: str) -> str:
    """The Serve application of one experiment's pool (no HTTP route: only the ingress calls it)."""
    return f"{app_name}--{experiment_id}"


#: Requests in flight on a replica of a swapped or retired pool get this long to finish.
DRAIN_TIMEOUT_S = 60


def deploy_pool(settings: RaySettings, app_name: str, experiment: Experiment, identity: str | None) -> None:
    """Deploy (or redeploy) one experiment's pool and wait until Serve runs it (at zero replicas). The
    build and the hand-over to Serve's controller hold the pickling lock; the wait for the pool to run
    does not, so that pools deployed at once (ten cold starts) wait for the controller together."""
    from ray.serve.context import _get_global_client

    name = pool_app_name(app_name, experiment.id)
    with _POLICY_PICKLING:
        serve._run(pool_application(settings, app_name, experiment, identity), _blocking=False, name=name,
                   route_prefix=None, logging_config=SERVE_LOGGING)
    _get_global_client()._wait_for_application_running(name)


def pool_application(settings: RaySettings, app_name: str, experiment: Experiment, identity: str | None) -> Any:
    """The bound application of one experiment's pool (`deploy_pool` deploys it); `experiment` as the
    replicas must read it."""
    definition = {**experiment.model_dump(), "base_dir": str(experiment.base_dir)}
    with _POLICY_PICKLING:
        return serve.deployment(
        ExperimentReplica,
            name=deployment_name(experiment.id),
            autoscaling_config=autoscaling_config(settings, app_name, experiment.id),
            # a replica takes what a Modal container does (`@modal.concurrent(max_inputs=...)`); more wait for another
            max_ongoing_requests=max(settings.target_ongoing, settings.modal_concurrent_inputs),
            graceful_shutdown_wait_loop_s=0.2,
            graceful_shutdown_timeout_s=DRAIN_TIMEOUT_S,
            ray_actor_options=replica_resources(settings),
        ).bind(definition, deployment_settings(settings, ingress=False), identity)

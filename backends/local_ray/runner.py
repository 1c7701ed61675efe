"""`hybrid-serve serve --backend ray`: start (or join) Ray, deploy the emulator, serve until Ctrl-C.

Why this module exists: the main job must come up with one command and go down with Ctrl-C leaving
no process behind — and behave on a cluster it shares with other teams. Without `RAY_ADDRESS` it
starts a private Ray instance (never one that `ray start` left on the machine) and, on exit, shuts it
down. With `RAY_ADDRESS` it joins that cluster, ships the project's code (and local model
directories) to every node through Ray's `runtime_env`, refuses an application name already taken,
serves where Serve's proxies really listen, and on exit removes only its own application. Before
anything goes, Ctrl-C or SIGTERM drains the ingress (`drain`): new requests and those still waiting
for a replica get 503, running ones get HYBRID_SHUTDOWN_TIMEOUT_S to finish — every client gets an
HTTP status, as from the in-process server. A driver
that already holds Ray (the testing kit keeps one up for a whole test session: `keep_ray`) is reused
as such a shared cluster: `stop` then removes only this application and leaves Ray and Serve up.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.local_ray.warm_workers import DEFAULT_MAX, WarmWorkers, raylet_environment
from backends.local_ray.settings import RaySettings, ray_settings
from core.auth import auth_mode
from core.event_console import events_on_console
from core.http.runner import ready_message
from core.serving.weights import weights_file
from core.serving.registry import PACKAGE_PREFIX, Experiment, Registry, RegistryError
from core.settings import SECRET_VARIABLES, Settings, SettingsError

from backends.local_ray.app import INGRESS_DEPLOYMENT, build_application
from backends.local_ray.ingress import APP_NAME
from backends.local_ray.pool import SERVE_LOGGING, pool_app_name, ray_environment
from backends.local_ray.proxy import proxy_environment, wait_delivered
from backends.local_ray.registry_keeper import NAMESPACE, RegistryKeeper, keeper_name
from backends.local_ray.activity_store import ActivityStore
from backends.local_ray.schedule_store import ScheduleStore
from backends.local_ray.replica_slots import StartingBoard
from backends.local_ray.usage_store import UsageStore
#: Ray refuses a `working_dir` larger than this; local models beyond it must live on shared storage.
MAX_SHIPPED_BYTES = 400 * 2**20
#: On Ctrl-C, once the ingress has answered every request: how long Serve's proxies get to send the answers.
DELIVERY_TIMEOUT_S = 10.0
#: ... and how long the ingress may take to take a stop's call beyond the requests' own time.
CALL_SLACK_S = 30.0
AUTH_HELP = (
    "Ray 2.60 clusters started with `ray start` require a token by default: export the cluster's token "
    "as RAY_AUTH_TOKEN (it is in ~/.ray/auth_token on the head node), or start the cluster with "
    "RAY_AUTH_MODE=disabled"
)


class RayStartError(RuntimeError):
    """Ray or Serve could not be started or joined as asked; the message says what to do."""


@dataclass
class Running:
    """What `start` brought up, for the ready message and for `stop`."""

    app_name: str
    url: str
    own_cluster: bool
    staging: Path | None = None
    note: str | None = None
    capacity: str = ""
    #: This start paid `ray.init` (False: the driver already held Ray).
    started_ray: bool = True
    #: `stop` leaves Ray (and Serve) up for the next application: its holder stops it.
    keep_ray: bool = False
    #: The registry keeper's handle: a named actor that is not detached lives while a handle does.
    keeper: Any = None
    #: The idle workers kept ready on a Ray instance this start brought up (warm_workers.py).
    warm: WarmWorkers | None = None

    @property
    def owns_serve(self) -> bool:
        """Whether `stop` may shut Serve down: the private Ray instance this start brought up, and nobody keeps."""
        return self.own_cluster and self.started_ray and not self.keep_ray


def _ship_models(registry: Registry) -> tuple[dict[str, tuple[Experiment, Experiment]], Path | None]:
    """Local model directories copied into a `working_dir` Ray uploads to every node (`models/<id>`,
    relative to each worker's directory): id → (the experiment as registered, as replicas read it)."""
    local = [e for e in registry if e.is_local and not e.source.startswith(PACKAGE_PREFIX)]
    if not local:
        return {}, None
    staging = Path(tempfile.mkdtemp(prefix="hybrid-serve-models-"))
    total = 0
    for experiment in local:
        source = experiment.local_path()
        if source is None or weights_file(source) is None:
            raise RayStartError(f"experiment {experiment.id!r}: no model at {experiment.source!r} to ship to the cluster")
        total += sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
        if total > MAX_SHIPPED_BYTES:
            raise RayStartError(
                f"experiment {experiment.id!r}: local model directories add up to more than "
                f"{MAX_SHIPPED_BYTES // 2**20} MiB, too much to ship to the cluster's nodes; serve these models from "
                "a Hugging Face repo id or an installed package, or start without RAY_ADDRESS"
            )
        shutil.copytree(source, staging / "models" / experiment.id)
    return {e.id: (e, e.model_copy(update={"source": f"./models/{e.id}", "base_dir": Path(".")})) for e in local}, staging


def _runtime_env(own_cluster: bool, staging: Path | None) -> dict[str, Any] | None:
    """None on a Ray instance of our own: its processes inherit this one's environment, and a replica
    with no runtime environment of its own may take a warm worker (Ray reuses a worker only for the same
    environment). On a cluster: the environment, the project's code and its local models."""
    if own_cluster:
        return None
    import backends
    import core

    env: dict[str, Any] = {"env_vars": ray_environment(), "py_modules": [core, backends]}
    if staging is not None:  # other nodes have neither this project's code nor its local models
        env["working_dir"] = str(staging)
    return env


def _warm_workers(settings: RaySettings) -> int:
    """HYBRID_WARM_WORKERS, or as many as cold starts may run at once — within the replica cap, and a
    few at most (memory at rest)."""
    if settings.warm_workers is not None:
        return settings.warm_workers
    cap = min(settings.max_containers, settings.max_replicas or settings.max_containers)
    return min(settings.max_cold_starts or os.cpu_count() or 1, cap, DEFAULT_MAX)


#: A Ray instance of our own collects no Ray metrics: they feed Ray's dashboard, which it does not start
#: (hybrid-serve's own are on /metrics), and collecting them costs every Ray process CPU — about a tenth
#: of the emulator's, idle or under load, on 2 cores.
OWN_INSTANCE_ENVIRONMENT = {"RAY_enable_metrics_collection": "0"}


def ray_address() -> str:
    """The cluster to join (`RAY_ADDRESS`), or "local": a private Ray instance of our own."""
    return os.environ.get("RAY_ADDRESS") or "local"


def start(settings: Settings, registry: Registry, host: str, port: int, app_name: str = APP_NAME,
          keep_ray: bool = False, verbose: bool = True) -> Running:
    """Start or join Ray (or use the Ray this driver already holds), start Serve's HTTP proxy on host:port
    (where Serve already runs: serve where it listens), deploy the application. `keep_ray`: `stop` leaves
    Ray up for the next application of this driver. `settings` must carry the Ray keys (`ray_settings`).
    `verbose` False: on a private cluster started here, Serve's own logs at warning level."""
    settings = ray_settings(settings)
    import ray
    from ray import serve

    address = ray_address()
    own_cluster = address == "local"  # never join a cluster nobody asked for
    started_ray = not ray.is_initialized()
    for key, value in ray_environment().items():  # processes of a local Ray instance inherit this environment
        if own_cluster and started_ray:
            os.environ[key] = value  # the emulator's own (a cluster's workers get them in their runtime env)
        else:
            os.environ.setdefault(key, value)
    warm = _warm_workers(settings) if own_cluster and started_ray else 0
    if own_cluster and started_ray:  # ... Serve's proxies too: ours only on a Ray instance of our own
        raylet = raylet_environment(warm, settings.max_containers)
        for key, value in {**proxy_environment(), **OWN_INSTANCE_ENVIRONMENT, **raylet}.items():
            os.environ.setdefault(key, value)
    for secret in SECRET_VARIABLES:  # ... so secrets leave it first: the settings already hold them
        os.environ.pop(secret, None)
    shipped, staging = ({}, None) if own_cluster else _ship_models(registry)
    if started_ray:
        try:
            ray.init(address=address, runtime_env=_runtime_env(own_cluster, staging), include_dashboard=False,
                     logging_level="WARNING", configure_logging=True)
        except Exception as exc:  # a refused connection, a missing token, a wrong address
            raise RayStartError(f"could not join the Ray cluster at RAY_ADDRESS={address!r}: {type(exc).__name__}: "
                                f"{str(exc)[:300]}. {AUTH_HELP}") from None
    running = Running(app_name, "", own_cluster, staging, started_ray=started_ray, keep_ray=keep_ray)
    deploying = False
    try:
        shared = not own_cluster or not started_ray
        if shared and app_name in _applications():
            raise RayStartError(f"a Serve application named {app_name!r} already runs on this cluster; "
                                "pick another with --name (it would be replaced otherwise)")
        quiet = not verbose and own_cluster and started_ray  # a shared cluster's Serve keeps its own log level
        serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"} if quiet else None)
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config
        if (http.host, http.port) != (host, port):
            running.note = (f"Serve on this cluster already listens on {http.host}:{http.port} (its HTTP options are "
                            f"fixed when Serve starts): serving there, not on {host}:{port}")
        settings = ray_settings(  # 0: what the cluster holds
            settings,
            max_replicas=min(settings.max_containers, settings.max_replicas or _cluster_capacity(settings)),
            max_cold_starts=settings.max_cold_starts or max(1, int(ray.cluster_resources().get("CPU", 1))),
        )
        deploying = True  # from here on, what fails leaves something of ours to remove
        StartingBoard(app_name).forget()  # cold starts a killed earlier run had under way hold no slot
        running.keeper = _start_keeper(settings, app_name, shipped)
        serve.run(build_application(settings, auth_mode(settings), app_name),
                  name=app_name, route_prefix="/", logging_config=SERVE_LOGGING)
    except BaseException:
        if started_ray and not keep_ray:
            ray.shutdown()
        elif deploying:  # Ray stays up: remove what we deployed (never an application of that name before us)
            _remove_application(app_name)
        raise
    running.url = f"{http.host}:{http.port}"
    running.warm = WarmWorkers(warm).start() if warm else None
    running.capacity = (f"up to {settings.max_replicas} replicas across experiments (MODAL_MAX_CONTAINERS, within "
                        f"what the cluster holds or HYBRID_MAX_REPLICAS), {settings.experiment_max_containers} for one "
                        f"(HYBRID_MAX_CONTAINERS_PER_EXPERIMENT), "
                        f"{settings.max_cold_starts} cold starts at once (HYBRID_MAX_COLD_STARTS), "
                        f"{warm} warm worker{'' if warm == 1 else 's'} (HYBRID_WARM_WORKERS)")
    return running


def _applications() -> dict[str, Any]:
    """Serve's applications on this cluster (none when Serve is not running there yet)."""
    from ray import serve

    return dict(serve.status().applications)


def _start_keeper(settings: RaySettings, app_name: str, shipped: dict[str, tuple[Experiment, Experiment]]) -> Any:
    """The registry's keeper, on this node (where the registry file is), alive as long as this driver."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    keeper = ray.remote(RegistryKeeper).options(
        name=keeper_name(app_name), namespace=NAMESPACE, num_cpus=0, scheduling_strategy=here, max_concurrency=4,
    ).remote(str(Path(settings.registry_path).resolve()) if settings.registry_path else None, shipped)
    ray.get(keeper.base_dir.remote())  # up before the ingress asks for it
    return keeper


def _cluster_capacity(settings: RaySettings) -> int:
    """How many replicas the cluster's CPUs and memory hold, as each replica asks for them."""
    import ray

    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 1) // settings.replica_cpus)
    if settings.replica_memory_mb:
        fits = min(fits, int(resources.get("memory", 0) // (settings.replica_memory_mb * 2**20)))
    return max(1, fits)


def stop(running: Running) -> None:
    """Undo `start`: Serve and Ray when they were this start's alone; otherwise only this application
    (its ingress, its pools, its registry keeper, its experiments' published activity) — and Ray stays up when kept."""
    import ray

    private = running.own_cluster and running.started_ray and not running.keep_ray
    if running.warm is not None and not running.keep_ray:
        running.warm.stop()
    try:
        if not private:  # a private cluster's Serve goes with it: no controller killed under its own tasks
            _remove_application(running.app_name)
    finally:
        if running.started_ray and not running.keep_ray:
            ray.shutdown()
        if running.staging is not None:
            shutil.rmtree(running.staging, ignore_errors=True)


def _remove_application(app_name: str) -> None:
    """Remove `app_name`'s applications and actors (a shared cluster, or Ray kept for the next
    application: Serve and its proxies are not ours)."""
    import ray
    from ray import serve

    if app_name in _applications():
        serve.delete(app_name)  # the ingress first: no new pool is deployed meanwhile
    pools = [name for name in _applications() if name.startswith(pool_app_name(app_name, ""))]
    for name in pools:
        serve.delete(name, _blocking=False)
    for name in pools:
        serve.delete(name)  # waits until it is gone
    try:
        ray.kill(ray.get_actor(keeper_name(app_name), namespace=NAMESPACE))  # dies with its driver otherwise
    except ValueError:  # never started
        pass
    ActivityStore(app_name).forget()
    ScheduleStore(app_name).forget()
    UsageStore(app_name).forget()
    StartingBoard(app_name).forget()


def drain(running: Running, timeout_s: float) -> None:
    """Before Serve goes: the ingress refuses new requests and those still waiting for a replica
    (503), gives the running ones `timeout_s` to finish and answers the rest 503; then, where the
    proxies are ours (they go with Serve), waits until they have sent every answer. A failure here
    is reported and `stop` runs all the same."""
    from ray import serve

    try:
        ingress = serve.get_deployment_handle(INGRESS_DEPLOYMENT, running.app_name)
        ingress.begin_shutdown.remote().result(timeout_s=CALL_SLACK_S)
        cut = ingress.drain.remote(timeout_s).result(timeout_s=timeout_s + CALL_SLACK_S)
        if cut:
            print(f"{cut} request(s) still running after {timeout_s:g}s (HYBRID_SHUTDOWN_TIMEOUT_S) answered 503", flush=True)
        if running.owns_serve and not wait_delivered(DELIVERY_TIMEOUT_S):
            print(f"note: Serve's proxies still had answers to send after {DELIVERY_TIMEOUT_S:g}s", file=sys.stderr, flush=True)
    except Exception as exc:  # the ingress gone already, ...: stop regardless
        print(f"note: draining the ingress failed ({type(exc).__name__}: {str(exc)[:200]}); stopping anyway",
              file=sys.stderr, flush=True)


def wait_until_stopped(stopped: threading.Event, poll_s: float = 0.5) -> None:
    """Wait for a stop signal. Python runs signal handlers only in the main thread, between bytecodes:
    a signal delivered to another thread (Ray has many) must not find the main thread blocked in an
    untimed wait, or it is never handled — so the wait wakes up every `poll_s`."""
    while not stopped.wait(poll_s):
        pass


class _LateQueueLengths(logging.Filter):
    """Serve's router warns when a replica answers its queue-length probe later than 0.1 s: on a busy
    machine, this process's own calls to its ingress at Ctrl-C (the drain) meet it, and an operator
    can do nothing about it — the call goes on and answers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to get queue length from")


LATE_QUEUE_LENGTHS = _LateQueueLengths()


def quiet_ray() -> None:
    """Ray's and Serve's own lines in this process (`hybrid-serve serve`'s, never a user's) at warning
    level, less the late queue-length probes of its own calls — the token-authentication notice of a
    private cluster hybrid-serve starts itself included (its token protects it all the same)."""
    serve_logger = logging.getLogger("ray.serve")
    serve_logger.setLevel(logging.WARNING)
    if LATE_QUEUE_LENGTHS not in serve_logger.filters:
        serve_logger.addFilter(LATE_QUEUE_LENGTHS)
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def run(settings: Settings, host: str, port: int, name: str = APP_NAME, verbose: bool = False,
        log_requests: bool = False, **_: Any) -> int:
    """The main job on the local Ray backend; 0 on a clean stop, 2 when Ray or Serve refused. `verbose`:
    Ray's and Serve's own logs as they come (quiet by default). The console shows the event log's new
    events (`log_requests` or HYBRID_LOG_REQUESTS: requests too); a private log only on a private Ray
    instance, whose processes all write this machine's files."""
    if not verbose:
        quiet_ray()
    with events_on_console(settings, log_requests or settings.log_requests, private=ray_address() == "local") as settings:
        code = _serve(settings, host, port, name, verbose)
    if code == 0:  # after the console's last event
        print("stopped.", flush=True)
    return code


def _serve(settings: Settings, host: str, port: int, name: str, verbose: bool) -> int:
    """Start, announce, wait for Ctrl-C or SIGTERM, drain and stop; 0 once stopped."""
    try:
        registry = Registry.load(settings.registry_path)
        running = start(settings, registry, host, port, name, verbose=verbose)
    except (RayStartError, RegistryError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if running.note:
        print(f"note: {running.note}", flush=True)
    print(f"capacity: {running.capacity}", flush=True)
    served_host, _, served_port = running.url.rpartition(":")
    print(ready_message(served_host, int(served_port), registry.first_id(), "ray"), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        wait_until_stopped(stopped)
    finally:
        print(f"shutting down {'Serve and Ray' if running.owns_serve else 'our Serve application'} ...", flush=True)
        drain(running, settings.shutdown_timeout_s)
        stop(running)
    return 0

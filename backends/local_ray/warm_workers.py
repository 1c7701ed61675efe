"""Ray worker processes started ahead, with the model stack already imported.

Why this module exists: a replica's cold start on Ray used to pay for a new worker process (Python and
Ray, ~2.5 s of CPU) and for importing torch and transformers (~2 s) before its model even began to
load — on two cores, ten cold starts at once took a minute each. Ray hands a new actor (a replica) an
idle worker of its job when one fits (same job, same runtime environment), so on a Ray instance of
its own the emulator keeps `HYBRID_WARM_WORKERS` idle workers ready: the raylet imports the model
stack into every worker it starts (`RAY_preload_python_modules`), and a thread of the driver asks the
raylet for a new worker (its `PrestartWorkers` call, one worker a call) whenever fewer are idle. A cold
start then pays for its model only (core.serving.model_stack: torch, and the parts of transformers that
a first load would import lazily, 2.2 s of its time). The cost is memory at rest (~380 MB a warm
worker) and every Ray process of the instance carrying the imports. Never on a cluster it joins: its raylets are not ours.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterable

log = logging.getLogger("hybrid_serve.ray.warm_workers")

#: Imported by every worker the raylet starts: what a replica's constructor would import.
PRELOADED = "core.serving.model_stack,core.serving.models"
#: How many workers a raylet starts at once when its command line does not say (Ray's
#: `--maximum_startup_concurrency`: the node's CPUs); it drops a request for one more while that many
#: are starting, so more are never asked for at once.
STARTUP_CONCURRENCY = os.cpu_count() or 1
#: Never more than this many kept ready by default: each costs ~380 MB at rest.
DEFAULT_MAX = 4
#: How long the raylet keeps an idle warm worker alive before it may kill it (an hour, renewed as used).
KEEP_ALIVE_S = 3600
#: A worker taken is replaced only once none was taken for this long: starting one imports torch at
#: full CPU, which would slow the very model loads of the cold starts that took them.
QUIET_S = 8.0


def raylet_environment(warm: int, max_replicas: int) -> dict[str, str]:
    """What the raylet of an instance of our own must inherit for `warm` warm workers: the imports,
    and a worker count above which idle ones are not killed (the replicas, the warm, Serve's own)."""
    if warm <= 0:
        return {}
    return {"RAY_preload_python_modules": PRELOADED, "RAY_num_workers_soft_limit": str(max_replicas + warm + 8)}


class WarmWorkers:
    """Keeps `count` idle workers of this driver's job on this node (polled every `poll_s`)."""

    def __init__(self, count: int, poll_s: float = 1.0):
        self.count = count
        self.poll_s = poll_s
        self._idle = 0  # idle workers at the last look
        self._taken_at = float("-inf")  # when a look last found fewer idle than the one before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="warm-workers", daemon=True)

    def start(self) -> "WarmWorkers":
        if self.count > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _keep(self) -> None:
        try:
            raylet, stub, request = _raylet()
        except Exception as exc:  # an older or newer Ray without it: cold starts pay for their process
            log.warning("warm workers unavailable (%s: %s): replicas start in new processes", type(exc).__name__, exc)
            return
        import ray

        concurrency = startup_concurrency(raylet.cmdline())  # type: ignore[attr-defined]
        while not self._stop.is_set() and ray.is_initialized():
            now = time.monotonic()
            try:
                idle, starting = worker_counts(raylet.children())  # type: ignore[attr-defined]
            except Exception:  # the raylet is gone: Ray shut down
                return
            if idle < self._idle:
                self._taken_at = now
            self._idle = idle
            for _ in range(workers_to_ask(self.count, idle, starting, quiet=now - self._taken_at >= QUIET_S,
                                          concurrency=concurrency)):
                try:
                    stub.PrestartWorkers(request, timeout=10)
                except Exception as exc:
                    log.warning("the raylet refused a warm worker (%s): retrying", type(exc).__name__)
                    break
            self._stop.wait(self.poll_s)


def startup_concurrency(raylet_command: list[str]) -> int:
    """How many workers the raylet starts at once: its `--maximum_startup_concurrency`, else this machine's CPUs."""
    for part in raylet_command:
        name, _, value = part.partition("=")
        if name == "--maximum_startup_concurrency" and value.isdigit():
            return max(1, int(value))
    return STARTUP_CONCURRENCY


def workers_to_ask(count: int, idle: int, starting: int, quiet: bool, concurrency: int = STARTUP_CONCURRENCY) -> int:
    """How many workers to ask the raylet for now, to keep `count` idle: none while cold starts are taking
    them (not `quiet`: a new worker's imports would slow their model loads), and never more than it
    starts at once (a request beyond that is dropped, and asked again at the next look)."""
    if not quiet:
        return 0
    return max(0, min(count - idle - starting, concurrency - starting))


def _raylet() -> tuple[object, object, object]:
    """This node's raylet process, a stub of its gRPC service and the request for one warm worker."""
    import psutil
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    worker = ray._private.worker.global_worker
    node = worker.node
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    stub = node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(f"{node.node_ip_address}:{node.node_manager_port}"))
    request = node_manager_pb2.PrestartWorkersRequest(language=common_pb2.PYTHON, job_id=worker.current_job_id.binary(),
                                                      keep_alive_duration_secs=KEEP_ALIVE_S, num_workers=1)
    return raylet, stub, request


def idle_workers(processes: Iterable[Any]) -> int:
    """How many of `processes` (psutil's) are idle Ray workers."""
    return worker_counts(processes)[0]


def worker_counts(processes: Iterable[Any]) -> tuple[int, int]:
    """Among `processes` (psutil's): Ray workers idle (Ray names one's process `ray::IDLE`), and workers
    still starting (the worker script, not named yet: it imports the preloaded modules first)."""
    idle = starting = 0
    for child in processes:
        try:
            command = child.cmdline() or [""]
        except Exception:  # gone meanwhile
            continue
        if command[0].startswith("ray::IDLE"):
            idle += 1
        elif any(part.endswith("default_worker.py") for part in command):
            starting += 1
    return idle, starting

"""Ray worker processes started ahead, with the model stack already imported.

Why this module exists: a replica's cold start on Ray used to pay for a new worker process (Python and
Ray, ~2.5 s of CPU) and for importing torch and transformers (~2 s) before its model even began to
load — on two cores, ten cold starts at once took a minute each. Ray hands a new actor (a replica) an
idle worker of its job when one fits (same job, same runtime environment), so on a Ray instance of
its own the emulator keeps `HYBRID_WARM_WORKERS` idle workers ready: the raylet imports the model
stack into every worker it starts (`RAY_preload_python_modules`), and a thread of the driver asks the
raylet for a new worker (its `PrestartWorkers` call, one worker a call) whenever fewer are idle. A cold
start then pays for its model only. The cost is memory at rest (~300 MB a warm worker) and every Ray
process of the instance carrying the imports. Never on a cluster it joins: its raylets are not ours.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable

log = logging.getLogger("hybrid_serve.ray.warm_workers")

#: Imported by every worker the raylet starts: what a replica's constructor would import.
PRELOADED = "torch,transformers,core.serving.models"
#: A worker asked for counts as on its way for this long (it starts, imports and registers — slowly
#: when ten cold starts share two cores), so a slow start is never asked for twice.
STARTING_S = 120.0
#: Never more than this many kept ready by default: each costs ~300 MB at rest.
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
        self._asked: list[float] = []  # when each worker still on its way was asked for
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

        while not self._stop.is_set() and ray.is_initialized():
            now = time.monotonic()
            try:
                idle = _idle_workers(raylet)
            except Exception:  # the raylet is gone: Ray shut down
                return
            if idle < self._idle:
                self._taken_at = now
            self._idle = idle
            self._asked = [t for t in self._asked if now - t < STARTING_S][: max(0, self.count - idle)]
            missing = self.count - idle - len(self._asked) if now - self._taken_at >= QUIET_S else 0
            for _ in range(missing):
                try:
                    stub.PrestartWorkers(request, timeout=10)
                except Exception as exc:
                    log.warning("the raylet refused a warm worker (%s): retrying", type(exc).__name__)
                    break
                self._asked.append(now)
            self._stop.wait(self.poll_s)


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


def _idle_workers(raylet: object) -> int:
    """Idle workers of this raylet."""
    return idle_workers(raylet.children())  # type: ignore[attr-defined]


def idle_workers(processes: Iterable[Any]) -> int:
    """How many of `processes` (psutil's) are idle Ray workers (Ray names one's process `ray::IDLE`)."""
    count = 0
    for child in processes:
        try:
            if (child.cmdline() or [""])[0].startswith("ray::IDLE"):
                count += 1
        except Exception:  # gone meanwhile
            continue
    return count

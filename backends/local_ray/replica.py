"""One Ray Serve replica of one experiment: a container in Modal's terms.

Why this module exists: a replica is what scales 0 → N → 0. Its constructor is the cold start (core's
`RemoteWorker` loads the model); it serves predictions through that worker; and it reports to the
autoscaling policy what only it knows (`record_autoscaling_stats`): when it was last busy, how many
requests it runs, whether it has served one (a replica that never served idles from its start), when it
was ready and how long it has been busy in all (the cost ledger's busy time) and,
once it has answered a request without a model (the load failed), that it holds none — the policy
lets such a replica go at once instead of keeping an empty container for the whole window. The
window itself is the policy's: it reads the experiment's activity, never a replica's word.

The model code (torch, transformers) is imported by the constructor alone: the ingress, which
deploys this class, stays free of it (about 3 CPU-seconds and 300 MB less per ingress start).
"""

from __future__ import annotations

import math
import time
from contextlib import aclosing
from typing import Any, AsyncIterator

from core.serving.mlflow_source import MLFLOW_PREFIX
from core.serving.registry import Experiment

from backends.local_ray import scaling
from backends.local_ray.settings import RaySettings


def actor_started_at() -> float | None:
    """When Ray started this replica's actor (its actor table's start time, the lifetime Ray reports),
    None if Ray does not say: the cost ledger's cold start runs from there."""
    try:
        import ray
        from ray._private.state import actors

        start_ms = actors(actor_id=ray.get_runtime_context().get_actor_id()).get("StartTime")
        return start_ms / 1000 if start_ms else None
    except Exception:  # an older or newer Ray without it: the constructor's start is the next best
        return None


class ExperimentReplica:
    def __init__(self, experiment: dict[str, Any], settings: RaySettings, identity: str | None = None):
        importing = time.perf_counter()
        import torch  # here, not at the top: the ingress deploys this class and never runs a model
        from ray import serve

        import core.serving.model_stack  # noqa: F401  (what a first load would import: counted as imports)

        from core.serving.worker import RemoteWorker

        imports_s = time.perf_counter() - importing  # ~0 in a process that imported them already

        torch.set_num_threads(max(1, math.floor(settings.replica_cpus)))  # the CPUs Ray reserved, no more
        replica_id = serve.get_replica_context().replica_id.unique_id
        self._started_at = actor_started_at()  # before the model loads: the whole cold start
        if identity is not None:  # a moving source (an MLflow alias): load what it resolved to when deployed
            experiment = {**experiment, "source": MLFLOW_PREFIX + identity}
        self.worker = RemoteWorker(settings, Experiment(**experiment), replica=replica_id, imports_s=imports_s)
        self.worker.load()
        self._last_busy = self.worker.ready_at
        self._served = False
        self._in_flight = 0
        self._busy_s = 0.0  # seconds with a request in flight, not counting the one running now
        self._busy_since = 0.0
        self._failed = False  # answered a request without a model (its load failed)

    async def predict(self, inputs: list[str], params: Any, request_at: float) -> dict[str, Any]:
        """Run a prediction (`request_at`: wall time it reached the ingress, for the cold start's parts)."""
        self._began()
        try:
            return await self.worker.predict(inputs, params, request_at)
        finally:
            self._ended()

    async def stream(self, prompt: str, params: Any, request_at: float) -> AsyncIterator[Any]:
        """A streamed generation (`RemoteWorker.stream`), called through a streaming handle: the replica is
        busy until its last item; cancelled (the client hung up), the generation stops."""
        self._began()
        try:
            async with aclosing(self.worker.stream(prompt, params, request_at)) as items:
                async for item in items:
                    yield item
        finally:
            self._ended()

    def _began(self) -> None:
        if not self._in_flight:
            self._busy_since = time.time()
        self._in_flight += 1
        self._served = True

    def _ended(self) -> None:
        self._in_flight -= 1
        self._last_busy = time.time()
        if not self._in_flight:
            self._busy_s += self._last_busy - self._busy_since
        self._failed = self.worker.load_failed

    def record_autoscaling_stats(self) -> dict[str, float]:
        """What the policy needs from this replica (scaling.ReplicaReport)."""
        now = time.time()
        stats = {
            scaling.LAST_BUSY: now if self._in_flight else self._last_busy,
            scaling.IN_FLIGHT: float(self._in_flight),
            scaling.STARTED_AT: self._started_at or self.worker.started_at,
            scaling.READY_AT: self.worker.ready_at,
            scaling.BUSY_S: self._busy_s + (now - self._busy_since if self._in_flight else 0.0),
        }
        if self._served:
            stats[scaling.SERVED] = 1.0
        if self._failed:
            stats[scaling.LOAD_FAILED] = 1.0
        return stats

    def check_health(self) -> None:  # Serve's health check: a replica that is up is healthy
        return None

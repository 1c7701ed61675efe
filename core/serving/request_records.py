"""What the server keeps of each finished request: its metrics, its traffic record, its cold start.

Why this module exists: a request ends in one of many ways — answered, refused, failed, cancelled by
a client that hung up, or (a stream) after its last token — and each must be counted exactly once,
with the status it got. The request path and the stream path both end their requests here.

A finished request is counted at the event loop's next turn, after its answer went out (its duration
is taken when it ends): its metrics and traffic record are off the request's own time, and whatever
comes next on the loop — the client's next request, a scrape of /metrics — sees them. A cold start is
written at once (rare, and its event-log line is read as soon as its answer arrives).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core.keepwarm.controller import PoolPlan
from core.metrics import ServerMetrics
from core.serving.after_answer import after_answer
from core.serving.errors import ServeError
from core.serving.prediction import Prediction
from core.serving.server_events import ServerEvents
from core.serving.traffic import Traffic


def status_of(exc: BaseException) -> str:
    """The status a request that ended with `exc` got: an error's own, 499 for a client that hung up (the
    request was cancelled), 500 for anything unexpected (the unexpected-error handler answers it)."""
    if isinstance(exc, ServeError):
        return str(exc.status_code)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "499"
    return "500"


class RequestRecords:
    def __init__(self, metrics: ServerMetrics, traffic: Traffic, server_events: ServerEvents):
        self.metrics = metrics
        self.traffic = traffic
        self.server_events = server_events
        #: The labelled series of each experiment (and status), looked up once: `labels()` costs a lock
        #: and a tuple build at every request.
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def finished(self, experiment_id: str, arrived_at: float, started: float, status: str,
                 prediction: Prediction | None, plan: PoolPlan | None, inputs: str | list[str]) -> None:
        """A request of a registered experiment ended with `status` (`started`: its perf_counter); counted
        at the loop's next turn, after its answer went out."""
        after_answer(self._count, experiment_id, arrived_at, time.perf_counter() - started, status, prediction, plan, inputs)

    def _count(self, experiment_id: str, arrived_at: float, elapsed: float, status: str,
               prediction: Prediction | None, plan: PoolPlan | None, inputs: str | list[str]) -> None:
        counter = self._counted.get((experiment_id, status))
        if counter is None:
            counter = self._counted[experiment_id, status] = self.metrics.requests.labels(experiment_id, status)
        timer = self._timed.get(experiment_id)
        if timer is None:
            timer = self._timed[experiment_id] = self.metrics.latency.labels(experiment_id)
        counter.inc()
        timer.observe(elapsed)
        self.traffic.request(
            experiment_id, arrived_at, int(status), elapsed,
            cold=prediction is not None and (prediction.cold_load or prediction.cold_start is not None),
            queue_wait_s=None if prediction is None else prediction.queue_ms / 1000,
            inputs=len(inputs) if isinstance(inputs, list) else 1,
            window_s=None if plan is None else plan.window_s, reason=None if plan is None else plan.reason.value,
        )

    def cold(self, experiment_id: str, prediction: Prediction, plan: PoolPlan) -> None:
        """A served request that loaded a model or waited for a container: its metrics and event."""
        if prediction.cold_load:
            self.metrics.cold_loads.labels(experiment_id).inc()
            self.metrics.load_seconds.labels(experiment_id).observe(prediction.load_ms / 1000)
        cold = prediction.cold_start
        if cold is not None and cold.first:  # a container started for this request (counted once)
            self.metrics.cold_starts.labels(experiment_id).inc()
            self.metrics.cold_start_seconds.labels(experiment_id, "replica_start").observe(cold.replica_start_s)
            self.metrics.cold_start_seconds.labels(experiment_id, "model_load").observe(cold.model_load_s)
        self.server_events.cold_start(experiment_id, prediction, plan)

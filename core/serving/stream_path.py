"""The request path of a streamed generation: validate → record → start → tokens → complete.

Why this module exists: a `"stream": true` request of a text-generation experiment takes the request
path's steps (core.serving.request_path) with two differences: it is answered once the generation
has started, and it ends only with its last token — or when its client hangs up, which stops the
generation. Until then it is in flight for the window controller (its container is busy), and its
metrics and traffic record are written at its end, with the status it got.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from core.events import EventLog, EventName
from core.keepwarm.controller import PoolPlan, WindowController
from core.serving.errors import InvalidInput
from core.serving.parameters import TaskParams
from core.serving.prediction import Prediction, Predictor
from core.serving.registry import Experiment, Task
from core.serving.request_records import RequestRecords, status_of
from core.serving.streaming import Guarded, StreamEnd


class RequestSteps(Protocol):
    """What a stream takes from the request path (core.serving.request_path.RequestPath)."""

    controller: WindowController
    events: EventLog
    predictor: Predictor
    records: RequestRecords

    async def current_experiment(self, experiment_id: str) -> Experiment: ...

    def validate(self, experiment: Experiment, inputs: str | list[str],
                 parameters: dict[str, Any] | None) -> tuple[list[str], TaskParams]: ...


@dataclass(frozen=True)
class StreamAnswer:
    """A streamed generation under way: how it started, the plan after its arrival, then its items."""

    experiment: Experiment
    start: Prediction
    plan: PoolPlan
    items: Guarded  # in flight until they end or are closed


class StreamPath:
    def __init__(self, path: RequestSteps):
        self.path = path

    async def stream(self, experiment_id: str, inputs: str | list[str], parameters: dict[str, Any] | None) -> StreamAnswer:
        """A text generation answered token by token: returns once it has started (errors before that
        are the usual ones, with their statuses); in flight until its last token."""
        path = self.path
        started, arrived_at = time.perf_counter(), time.time()
        experiment = await path.current_experiment(experiment_id)
        plan: PoolPlan | None = None
        try:
            batch, params = path.validate(experiment, inputs, parameters)
            if experiment.task is not Task.TEXT_GENERATION:
                raise InvalidInput(f"stream: {experiment.id} is a {experiment.task.value} experiment; only "
                                   "text-generation experiments stream")
            if len(batch) != 1:
                raise InvalidInput(f"stream: a streamed request takes one input; inputs holds {len(batch)}")
            plan = path.controller.arrived(experiment.id)
            path.events.write(experiment.id, EventName.REQUEST, plan.window_s, plan.reason.value)
            try:
                streaming = await path.predictor.stream(experiment, batch[0], params)
            except BaseException:
                path.controller.finished(experiment.id)
                raise
        except BaseException as exc:
            path.records.finished(experiment.id, arrived_at, started, status_of(exc), None, plan, inputs)
            raise
        path.answered(experiment.id, streaming.start, plan)

        async def ended(error: BaseException | None) -> None:  # after the last token, or the client left
            status = "200" if isinstance(follow.last, StreamEnd) else status_of(error or GeneratorExit())
            path.controller.finished(experiment.id)
            path.records.finished(experiment.id, arrived_at, started, status, streaming.start, plan, inputs)

        follow = Guarded(streaming.items, ended)
        return StreamAnswer(experiment, streaming.start, plan, follow)

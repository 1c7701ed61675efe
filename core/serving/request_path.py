"""The request path: validate → record → predict → complete.

Why this module exists: it is the one path every prediction takes, whatever the backend. For a valid
request of a registered experiment it records the arrival (the activity tracker: the backend's sink,
which publishes it where the backend's window controller runs), sends the request to the backend's
`Predictor`, and records the completion. The window a response reports is the controller's plan for
that arrival (core.keepwarm.controller: the same pure function every backend's controller applies);
nothing here applies a window. The request's metrics, traffic record and event-log lines are written
by this path (through core.serving.request_records) and nowhere else; a streamed generation takes the
same steps in core.serving.stream_path; the HTTP layer only maps them to routes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from core.events import EventLog, EventName
from core.keepwarm.controller import AppliedWindow, PoolPlan, WindowController
from core.keepwarm.decision import NamedPolicy
from core.metrics import ServerMetrics
from core.serving.errors import InvalidInput, PayloadTooLarge, UnknownExperiment
from core.serving.live_registry import LiveRegistry
from core.serving.parameters import TaskParams, parse_parameters
from core.serving.prediction import Prediction, Predictor
from core.serving.registry_admin import RegistryAdmin
from core.serving.registry import Experiment, Registry
from core.serving.server_events import ServerEvents
from core.serving.request_records import RequestRecords, status_of
from core.serving.stream_path import StreamPath
from core.serving.traffic import Traffic
from core.settings import Settings




@dataclass(frozen=True)
class Answer:
    """A served prediction, the experiment's plan right after its arrival, and its time in the server."""

    experiment: Experiment
    prediction: Prediction
    plan: PoolPlan
    total_s: float


#: What a backend's controller applied, per experiment (Modal: read from the shared state); None: the
#: controller applies the plans as they are made (in-process, Ray), so what is in force is the plan.
AppliedFn = Callable[[], Awaitable[dict[str, AppliedWindow]]]


class RequestPath:
    def __init__(
        self,
        settings: Settings,
        registry: Registry | LiveRegistry,
        predictor: Predictor,
        controller: WindowController | None = None,
        metrics: ServerMetrics | None = None,
        applied: AppliedFn | None = None,
        loads_here: bool = False,
    ):
        self.settings = settings
        self.registry = registry if isinstance(registry, LiveRegistry) else LiveRegistry.static(registry)
        self.registry.subscribe(predictor.registry_changed)  # a removed or changed experiment's model goes
        self.predictor = predictor
        #: The plan of every experiment, as its backend's controller makes it (each backend builds its
        #: own around the tracker it publishes through; the in-process server's keeps it in memory).
        self.controller = controller or WindowController.in_memory(settings)
        self.controller.schedules = lambda: self.registry.current.schedules()  # the registry's, as it changes
        self.policy: NamedPolicy = self.controller.policy
        self.tracker = self.controller.tracker
        self.applied = applied
        self.metrics = metrics or ServerMetrics()
        self.events = EventLog.for_settings(settings)
        #: Cold starts and registry changes in the event log (`loads_here`: the models run in this process).
        self.server_events = ServerEvents(self.events, loads_here)
        #: Every finished request of a registered experiment, recorded (no inputs, no outputs).
        self.traffic = Traffic(self.events.recording)
        #: A finished request's metrics and traffic record; a cold start's metrics and event.
        self.records = RequestRecords(self.metrics, self.traffic, self.server_events)
        #: Streamed generations (`"stream": true`) take this path too, held open until their last token.
        self.streams = StreamPath(self)
        #: Registry changes over the admin API (PUT / DELETE /experiments/{id}).
        self.admin = RegistryAdmin(self.registry, self.current_experiment)

    def experiment(self, experiment_id: str) -> Experiment:
        experiment = self.registry.get(experiment_id)
        if experiment is None:
            raise UnknownExperiment.named(experiment_id, (e.id for e in self.registry))
        return experiment

    async def current_experiment(self, experiment_id: str) -> Experiment:
        """The experiment, also when it was registered elsewhere a moment ago: an id not known here
        costs one look at the registry's stamp (a re-read only when it moved) before the 404."""
        experiment = self.registry.get(experiment_id)
        if experiment is None:
            await self.registry.refresh_shared()
            return self.experiment(experiment_id)
        return experiment

    def validate(self, experiment: Experiment, inputs: str | list[str], parameters: dict[str, Any] | None) -> tuple[list[str], TaskParams]:
        batch = [inputs] if isinstance(inputs, str) else list(inputs)
        if not batch:
            raise InvalidInput("inputs: must be a string or a non-empty list of strings")
        if len(batch) > self.settings.max_inputs:
            raise PayloadTooLarge(f"inputs: {len(batch)} inputs in one request; the limit is {self.settings.max_inputs} (HYBRID_MAX_INPUTS)")
        for i, text in enumerate(batch):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInput(f"inputs[{i}]: not valid text: {exc.reason} at position {exc.start} "
                                   "(a lone UTF-16 surrogate cannot be encoded)") from None
        return batch, parse_parameters(experiment.task, parameters, self.settings.max_new_tokens)

    async def predict(self, experiment_id: str, inputs: str | list[str], parameters: dict[str, Any] | None) -> Answer:
        started, arrived_at = time.perf_counter(), time.time()
        experiment = await self.current_experiment(experiment_id)  # an unknown id is not counted: no label per typo
        plan: PoolPlan | None = None
        prediction: Prediction | None = None
        try:
            batch, params = self.validate(experiment, inputs, parameters)
            plan = self.controller.arrived(experiment.id)
            self.events.write(experiment.id, EventName.REQUEST, plan.window_s, plan.reason.value)
            try:
                prediction = await self.predictor.predict(experiment, batch, params)
            finally:
                self.controller.finished(experiment.id)
        except BaseException as exc:
            self.records.finished(experiment.id, arrived_at, started, status_of(exc), prediction, plan, inputs)
            raise
        self.records.finished(experiment.id, arrived_at, started, "200", prediction, plan, inputs)
        self.answered(experiment.id, prediction, plan)
        return Answer(experiment, prediction, plan, time.perf_counter() - started)

    def answered(self, experiment_id: str, prediction: Prediction, plan: PoolPlan) -> None:
        """A container answered: a started one's first answer measures the experiment's cold start (its
        plans' price and pre-warm lead) and is counted (metrics, event)."""
        cold = prediction.cold_start
        if cold is not None and cold.first:
            self.controller.cold_started(experiment_id, cold.start_s)
        self.records.cold(experiment_id, prediction, plan)

    async def start(self) -> None:
        """Read the registry's latest state, then follow its changes (in the server's event loop)."""
        await self.registry.refresh()
        self.registry.subscribe(self.server_events.registry_changed)  # changes from now on, not the first read
        self.registry.start()

    def begin_shutdown(self) -> None:
        """The server stops: requests still waiting are refused (503), running ones finish."""
        self.predictor.begin_shutdown()

    async def close(self) -> None:
        self.traffic.flush()
        await self.registry.close()
        await self.predictor.close()

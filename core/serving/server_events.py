"""What the request path writes to the event log beyond a request's arrival: cold starts, registry changes.

Why this module exists: the console of `hybrid-serve serve`, the testing kit and a person reading the
log need one timeline of what happened to each experiment — a container started for a request (on
the in-process server: its model loaded for one), an experiment added, changed or removed while the
server runs. Each is written once, where it is known: the answer of the request that waited for the
start, the live registry's announcement of a change (after the registry's first read, which is the
server starting, not a change).
"""

from __future__ import annotations

from core.events import EventLog, EventName
from core.keepwarm.controller import PoolPlan
from core.serving.prediction import Prediction
from core.serving.registry import Registry
from core.serving.registry_change import RegistryChange


class ServerEvents:
    """The cold starts and registry changes of one server, written to its event log. `loads_here`: the
    models run in this process (the in-process server), so a model loaded for a request is its cold start."""

    def __init__(self, events: EventLog, loads_here: bool = False):
        self.events = events
        self.loads_here = loads_here

    def cold_start(self, experiment_id: str, prediction: Prediction, plan: PoolPlan) -> None:
        """A container started for this request (counted once: its first answer), or, in this process, the
        model was loaded for it (not for a concurrent request it waited for)."""
        cold, reason = prediction.cold_start, plan.reason.value
        if cold is not None and cold.first:
            self.events.write(experiment_id, EventName.COLD_START, plan.window_s, reason, replica=prediction.replica,
                              replica_start_s=round(cold.replica_start_s, 4), model_load_s=round(cold.model_load_s, 4),
                              total_s=round(cold.total_s, 4))
        elif cold is None and self.loads_here and prediction.loaded:
            load_s = round(prediction.load_ms / 1000, 4)
            self.events.write(experiment_id, EventName.COLD_START, plan.window_s, reason, replica=None,
                              replica_start_s=None, model_load_s=load_s, total_s=load_s)

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        """One line per experiment the change concerns (a live registry's listener)."""
        for kind, ids in (("added", change.added), ("changed", change.changed), ("removed", change.removed),
                          ("rescheduled", change.rescheduled)):
            for experiment_id in ids:
                experiment = registry.get(experiment_id)
                self.events.write(experiment_id, EventName.REGISTRY, None, kind, change=kind,
                                  task=None if experiment is None else experiment.task.value,
                                  source=None if experiment is None else experiment.source)

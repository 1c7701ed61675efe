"""Every experiment's warm schedule in Ray's GCS key-value store: what the ingress publishes and each
pool's scaling policy reads.

Why this module exists: core's `with_schedule` (core.keepwarm.controller) puts an experiment's warm
schedule on top of its plan, but on Ray the plan is made in each pool's autoscaling policy, inside
Serve's controller, which never sees the registry. The ingress, which follows the registry
(warm_schedules.py), publishes each schedule here, beside the activity (activity_store.py); the pool's
policy reads it back every `READ_EVERY_S`.
"""

from __future__ import annotations

import json
import logging

from core.keepwarm.warm_schedule import WarmWindow

log = logging.getLogger("hybrid_serve.ray.schedule_store")

NAMESPACE = "hybrid-serve-schedules"
#: How often a pool's policy reads its schedule again (a changed schedule applies within this, real s).
READ_EVERY_S = 5.0

Windows = tuple[WarmWindow, ...]


class ScheduleStore:
    """One application's experiments' warm schedules in the GCS (blocking calls: run them off the event loop)."""

    def __init__(self, app_name: str):
        self.app_name = app_name

    def write(self, experiment_id: str, windows: Windows | None) -> None:
        """Publish the experiment's schedule (None: it has none)."""
        from ray.experimental import internal_kv

        if not windows:
            internal_kv._internal_kv_del(self._key(experiment_id), namespace=NAMESPACE)
            return
        value = json.dumps([w.model_dump(mode="json") for w in windows]).encode()
        internal_kv._internal_kv_put(self._key(experiment_id), value, overwrite=True, namespace=NAMESPACE)

    def read(self, experiment_id: str) -> Windows | None:
        from ray.experimental import internal_kv

        value = internal_kv._internal_kv_get(self._key(experiment_id), namespace=NAMESPACE)
        return None if value is None else tuple(WarmWindow.model_validate(w) for w in json.loads(value))

    def forget(self) -> None:
        """Forget every experiment's schedule of the application (it goes away)."""
        from ray.experimental import internal_kv

        for key in internal_kv._internal_kv_list(self._key(""), namespace=NAMESPACE):
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)

    def _key(self, experiment_id: str) -> bytes:
        return f"{self.app_name}/{experiment_id}".encode()


class ScheduleReader:
    """The pool's schedule as the ingress last published it, read every `READ_EVERY_S` (the last one
    read holds while the GCS cannot be reached)."""

    def __init__(self, store: ScheduleStore | None, experiment_id: str):
        self.store, self.experiment_id = store, experiment_id
        self.windows: Windows | None = None
        self._read_at: float | None = None

    def current(self, now: float) -> Windows | None:
        if self.store is not None and (self._read_at is None or now - self._read_at >= READ_EVERY_S):
            try:
                self.windows = self.store.read(self.experiment_id)
            except Exception:
                log.exception("could not read %s's warm schedule", self.experiment_id)
            self._read_at = now
        return self.windows

"""Every experiment's cost ledger record in Ray's GCS key-value store: what each pool's scaling policy
publishes and the ingress reads for `/health`, `/experiments` and `/metrics`.

Why this module exists: on Ray the replicas' lifecycles are seen by the autoscaling policy inside
Serve's controller, while the state views are rendered by the ingress. The policy publishes its
experiment's `UsageRecord` (core's cost ledger) under one key per experiment, in a namespace of its
own; a policy that restarts carries on from it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from core.keepwarm.ledger import UsageRecord

log = logging.getLogger("hybrid_serve.ray.usage_store")

NAMESPACE = "hybrid-serve-usage"
#: How old a reading the ingress may answer with: policies publish every few seconds, and `/health`,
#: `/metrics` and the dashboard of 64 clients must not each list and read every key.
RECENT_S = 1.0


class UsageStore:
    """One application's experiments' ledger records in the GCS (blocking calls: run them off the event loop)."""

    def __init__(self, app_name: str, recent_s: float = RECENT_S, clock: Callable[[], float] = time.monotonic):
        self.app_name = app_name
        self.recent_s = recent_s
        self._clock = clock
        self._recent_lock = threading.Lock()
        self._recent: tuple[float, dict[str, UsageRecord]] | None = None

    def write(self, record: UsageRecord) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(self._key(record.experiment_id), json.dumps(record.to_json()).encode(),
                                     overwrite=True, namespace=NAMESPACE)

    def read(self, experiment_id: str) -> UsageRecord | None:
        from ray.experimental import internal_kv

        if not internal_kv._internal_kv_initialized():
            return None
        value = internal_kv._internal_kv_get(self._key(experiment_id), namespace=NAMESPACE)
        return None if value is None else UsageRecord.from_json(json.loads(value))

    def read_all(self) -> dict[str, UsageRecord]:
        from ray.experimental import internal_kv

        out = {}
        for key in internal_kv._internal_kv_list(self._key(""), namespace=NAMESPACE):
            value = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
            try:
                record = None if value is None else UsageRecord.from_json(json.loads(value))
            except (ValueError, KeyError, TypeError) as exc:  # one unreadable record hides itself only
                log.warning("skipping an unreadable ledger record %r: %s", key, exc)
                continue
            if record is not None:
                out[record.experiment_id] = record
        return out

    def read_recent(self) -> dict[str, UsageRecord]:
        """`read_all`, at most once every `recent_s`: callers at the same time share one reading."""
        with self._recent_lock:
            now = self._clock()
            if self._recent is None or now - self._recent[0] >= self.recent_s:
                self._recent = (now, self.read_all())
            return self._recent[1]

    def forget(self) -> None:
        """Forget every experiment's record of the application (it goes away)."""
        from ray.experimental import internal_kv

        for key in internal_kv._internal_kv_list(self._key(""), namespace=NAMESPACE):
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)

    def _key(self, experiment_id: str) -> bytes:
        return f"{self.app_name}/{experiment_id}".encode()

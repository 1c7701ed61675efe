"""Every experiment's activity in Ray's GCS key-value store: what the ingress publishes and each pool's
scaling policy reads.

Why this module exists: on Ray the window controller is the autoscaling policy inside Serve's
controller, while arrivals reach the ingress. The ingress publishes each experiment's activity — core's
`DurableActivity`: the latest two requests, the latest completion, the count and what a learning policy
learned, in emulated wall-clock seconds — under one key per experiment; the policy reads it and runs
core's `plan_pool` on it. With it goes the ingress's count of the experiment's requests at its pool
(`Published.in_flight`: given to the pool's handle, not answered yet): a request waiting there for a
replica to start is the ingress's to count — Serve's own load figure undercounts requests queued at a
pool that went to zero (it shows the one its cold-start path starts a replica for) — as Modal's ingress
sizes a pool from its own count. The GCS outlives Serve's controller and the ingress, so a controller or an
ingress that restarts carries on from it (a pre-warm planned before still happens, warm pools stay).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from core.keepwarm.shared_activity import DurableActivity

NAMESPACE = "hybrid-serve"


def activity_key(app_name: str, experiment_id: str) -> str:
    return f"{app_name}/{experiment_id}"


#: The fields of a durable record that are bytes (histograms): base64 in the GCS's JSON.
HISTOGRAMS = ("idle_gaps", "burst_gaps")


@dataclass(frozen=True)
class Published:
    """What the ingress publishes of one experiment: its durable activity and its requests at the pool."""

    activity: DurableActivity
    #: The experiment's requests at its pool when the ingress wrote this (a live figure: never restored;
    #: an ingress that starts writes 0 over what the one before it left).
    in_flight: int = 0


def encode(published: Published) -> bytes:
    data = {**published.activity.to_dict(), "in_flight": published.in_flight}
    for name in HISTOGRAMS:
        if data.get(name) is not None:
            data[name] = base64.b64encode(data[name]).decode()
    return json.dumps(data).encode()


def decode(value: bytes) -> Published:
    data: dict[str, Any] = json.loads(value)
    for name in HISTOGRAMS:
        if data.get(name) is not None:
            data[name] = base64.b64decode(data[name])
    return Published(DurableActivity.from_dict(data), int(data.get("in_flight") or 0))


class ActivityStore:
    """One application's experiments' activity in the GCS (blocking calls: run them off the event loop)."""

    def __init__(self, app_name: str):
        self.app_name = app_name

    def write(self, record: DurableActivity | Published) -> None:
        from ray.experimental import internal_kv

        published = record if isinstance(record, Published) else Published(record)
        internal_kv._internal_kv_put(self._key(published.activity.experiment_id), encode(published),
                                     overwrite=True, namespace=NAMESPACE)

    def read(self, experiment_id: str) -> DurableActivity | None:
        published = self.read_published(experiment_id)
        return None if published is None else published.activity

    def read_published(self, experiment_id: str) -> Published | None:
        from ray.experimental import internal_kv

        if not internal_kv._internal_kv_initialized():
            return None
        value = internal_kv._internal_kv_get(self._key(experiment_id), namespace=NAMESPACE)
        return None if value is None else decode(value)

    def read_all(self) -> list[Published]:
        """Every experiment's activity of the application (an ingress starting)."""
        from ray.experimental import internal_kv

        records = []
        for key in self._keys():
            value = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
            if value is not None:
                records.append(decode(value))
        return records

    def clear(self, experiment_id: str) -> None:
        """Forget one experiment's activity (it was retired)."""
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(self._key(experiment_id), namespace=NAMESPACE)

    def forget(self) -> None:
        """Forget every experiment's activity of the application (it goes away)."""
        from ray.experimental import internal_kv

        for key in self._keys():
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)

    def _key(self, experiment_id: str) -> bytes:
        return activity_key(self.app_name, experiment_id).encode()

    def _keys(self) -> list[bytes]:
        """The keys of every experiment of the application."""
        from ray.experimental import internal_kv

        return internal_kv._internal_kv_list(self._key(""), namespace=NAMESPACE)

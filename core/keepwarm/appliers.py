"""Where a scaledown decision goes: the backend's `WindowApplier`, and what it reports as in force.

Why this module exists: core decides windows, backends apply them (Ray: the autoscaling policy of
the experiment's deployment, which gets the decision with each request; Modal: `update_autoscaler`
on the experiment's pool). The request path hands every decision to an applier, and `/health`
shows what is in force as one `AppliedWindow` shape whatever the backend. Backends whose windows
need no remote call (in-process, Ray) use `RecordingApplier`, which only records.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Protocol

from core.keepwarm.decision import WindowDecision


@dataclass(frozen=True)
class AppliedWindow:
    """The window in force for one experiment, as `/health` reports it on every backend."""

    window_s: int
    reason: str
    prewarm_after_s: int | None
    #: Containers the backend pins warm (Modal's `min_containers` during a pre-warm); None where the
    #: backend has no such setting.
    min_containers: int | None
    #: Unix time the backend took the decision.
    applied_at: float
    #: The Modal deployment the override belongs to (a deploy resets overrides); None elsewhere.
    deployment: str | None = None


class WindowApplier(Protocol):
    def apply(self, experiment_id: str, decision: WindowDecision) -> None:
        """Make `decision` the window of the experiment's containers (must not block the request)."""

    def in_force(self) -> dict[str, AppliedWindow]:
        """Per experiment: the window in force."""


class RecordingApplier:
    """Records each experiment's latest decision; for backends whose windows need no remote call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_force: dict[str, AppliedWindow] = {}

    def apply(self, experiment_id: str, decision: WindowDecision) -> None:
        applied = AppliedWindow(decision.window_s, decision.reason.value, decision.prewarm_after_s, None, time.time())
        with self._lock:
            current = self._in_force.get(experiment_id)
            if current is None or replace(current, applied_at=applied.applied_at) != applied:
                self._in_force[experiment_id] = applied

    def in_force(self) -> dict[str, AppliedWindow]:
        with self._lock:
            return dict(self._in_force)

"""Where a scaledown decision goes: the backend's `WindowApplier`.

Why this module exists: core decides windows, backends apply them (Ray: the autoscaling policy of
the experiment's deployment; Modal: `update_autoscaler` on the experiment's pool). The service hands
every decision to an applier and shows what is in force in `/health`. The in-process server has no
containers to scale, so its applier only records the decision.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from core.policy import WindowDecision


class WindowApplier(Protocol):
    def apply(self, experiment_id: str, decision: WindowDecision) -> None:
        """Make `decision` the window of the experiment's containers (must not block the request)."""

    def in_force(self) -> dict[str, dict[str, Any]]:
        """Per experiment: the window in force, its reason, and when it was applied (Unix time)."""


class RecordingApplier:
    """Records each experiment's latest decision; for backends whose windows need no remote call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_force: dict[str, dict[str, Any]] = {}

    def apply(self, experiment_id: str, decision: WindowDecision) -> None:
        with self._lock:
            current = self._in_force.get(experiment_id)
            if (current and current["window_s"] == decision.window_s and current["reason"] == decision.reason.value
                    and current["prewarm_after_s"] == decision.prewarm_after_s):
                return
            self._in_force[experiment_id] = {
                "window_s": decision.window_s, "reason": decision.reason.value,
                "prewarm_after_s": decision.prewarm_after_s, "applied_at": time.time(),
            }

    def in_force(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {e: dict(v) for e, v in self._in_force.items()}

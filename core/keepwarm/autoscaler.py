"""What an experiment's container pool should look like right now: the desired autoscaler state.

Why this module exists: a decision says "keep warm for W" or "scale to zero, pre-warm after P, keep
for W"; a platform's autoscaler wants two numbers at each moment — the scaledown window of idle
containers and how many containers to keep regardless of traffic (`min_containers`). Turning the
first into the second, as a function of how long the experiment has been idle, is the same for
every backend: Modal's reconciler applies it with `update_autoscaler`, the local Ray emulator's
autoscaling policy applies it to replicas. One pure function, tested once for both.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import MODAL_MIN_WINDOW_S


@dataclass(frozen=True)
class AutoscalerState:
    """The pool's autoscaler at one moment (seconds in the decision's clock)."""

    scaledown_window_s: int
    min_containers: int
    reason: str
    #: Seconds (of idle time) until this state changes by itself; None: it holds until the next request.
    changes_in_s: float | None


def desired_state(window_s: float, prewarm_after_s: float | None, idle_s: float, lead_s: float) -> AutoscalerState:
    """The autoscaler state for the decision of the experiment's latest request (`window_s`, and
    `prewarm_after_s` for a pre-warm plan), once the experiment has been idle for `idle_s` (0 while a
    request runs). A plain window keeps idle containers for `window_s`. A pre-warm plan lets the pool
    go at once (Modal's shortest window), pins one container from `lead_s` before the next request is
    due until the plan's keep time is over, then lets it go again."""
    window = int(window_s)
    if prewarm_after_s is None:
        return AutoscalerState(window, 0, f"keep idle containers {window}s", None)
    start, end = prewarm_after_s - lead_s, prewarm_after_s + window_s
    if idle_s < start:
        return AutoscalerState(MODAL_MIN_WINDOW_S, 0, f"scaled down until the pre-warm in {start - idle_s:.1f}s",
                               start - idle_s)
    if idle_s < end:
        due = max(0.0, prewarm_after_s - idle_s)
        return AutoscalerState(MODAL_MIN_WINDOW_S, 1, f"pre-warm: request expected in {due:.1f}s", end - idle_s)
    return AutoscalerState(MODAL_MIN_WINDOW_S, 0, "pre-warm over", None)

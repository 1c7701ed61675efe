"""The hybrid keep-warm policy: how long experiment E's containers stay warm after its latest request.

Why this module exists: it is the decision the product makes by default, so it is a pure function
of E's activity and the settings — no clock, no I/O — that the HTTP server, both backends and the
simulator all call. The fixed window, the baseline every keep-warm study compares with, is here too.

Semantics: after E's latest request the window is `base + extension` when E had *another* request
at most `activity_window` seconds before it (a gap exactly equal to the activity window counts as
recent), else `base`. A container of E scales down once E has been idle for that window.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.decision import Policy, WindowDecision, WindowReason
from core.settings import PRESETS, Settings


@dataclass(frozen=True)
class HybridParams:
    """The three numbers the hybrid policy reads, in seconds."""

    base_s: int
    extension_s: int
    activity_window_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "HybridParams":
        return cls(settings.base_warm_time, settings.extension_time, settings.activity_window)

    @classmethod
    def from_preset(cls, name: str) -> "HybridParams":
        values = PRESETS[name]
        return cls(values["MODAL_BASE_WARM_TIME"], values["MODAL_EXTENSION_TIME"], values["MODAL_ACTIVITY_WINDOW"])


def hybrid_window(activity: ExperimentActivity | None, params: HybridParams) -> WindowDecision:
    """Decide E's scaledown window from E's own activity (never from other experiments')."""
    if activity is None:
        return WindowDecision(params.base_s, WindowReason.NO_ACTIVITY, "no request remembered: base window")
    if activity.previous_request is not None:
        gap = activity.last_request - activity.previous_request
        if gap <= params.activity_window_s:
            return WindowDecision(
                params.base_s + params.extension_s,
                WindowReason.RECENT_ACTIVITY,
                f"previous request {gap:.1f}s before the latest (≤ activity window {params.activity_window_s}s): "
                f"base {params.base_s}s + extension {params.extension_s}s",
            )
    return WindowDecision(
        params.base_s,
        WindowReason.ISOLATED,
        f"no other request within {params.activity_window_s}s before the latest: base {params.base_s}s",
    )


def hybrid_policy(params: HybridParams) -> Policy:
    return lambda activity: hybrid_window(activity, params)


def fixed_window(seconds: int, burst_s: int | None = None) -> Policy:
    """A policy that always answers the same window (and, with `burst_s`, a shorter one for the extra containers)."""
    if burst_s is not None and burst_s < seconds:
        decision = WindowDecision(seconds, WindowReason.FIXED, f"fixed windows: the last container {seconds}s, "
                                  f"extra ones {burst_s}s", burst_window_s=burst_s)
    else:
        decision = WindowDecision(seconds, WindowReason.FIXED, f"fixed window {seconds}s")
    return lambda activity: decision

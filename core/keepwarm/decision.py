"""What a keep-warm policy decides for one experiment, and the one shape every policy has.

Why this module exists: the decision is the value that travels the whole request path — decided
from E's activity, shown in the response and `/health`, handed to the backend with the request —
so it is one typed value. A policy is a plain function of E's activity (the manner of Ray Serve's
`autoscaling_policy.py`: a policy maps a context to a decision; whatever applies it lives
elsewhere); a learning policy also names the `Learner` the activity tracker must run for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Callable

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.histogram import Learner


class WindowReason(StrEnum):
    FIXED = "fixed"
    LEARNED = "learned"
    NO_ACTIVITY = "no-activity"
    ISOLATED = "isolated"
    RECENT_ACTIVITY = "recent-activity"


@dataclass(frozen=True)
class WindowDecision:
    """A scaledown window for one experiment and why it was chosen."""

    window_s: int
    reason: WindowReason
    detail: str
    #: Pre-warm: let the pool go a minute after the request and bring it back (its width) this many
    #: seconds after the request arrived, kept for `window_s` (None: keep warm for `window_s` right
    #: after the request).
    prewarm_after_s: int | None = None
    #: Two windows: the extra (burst) containers idle this long, the last one `window_s` (None: every
    #: container keeps `window_s`). Only for a plan without pre-warm, and always shorter than `window_s`.
    burst_window_s: int | None = None

    def expires_at(self, activity: ExperimentActivity | None) -> float | None:
        """When E's containers may scale down if nothing else arrives (tracker clock), or None if never used."""
        if activity is None:
            return None
        return activity.now - activity.idle_s + self.window_s


#: A keep-warm policy: E's activity (None: nothing remembered) → E's window.
Policy = Callable[[ExperimentActivity | None], WindowDecision]


@dataclass(frozen=True)
class NamedPolicy:
    """A policy as configured: its name, its decision function, and what it learns (if anything)."""

    name: str
    decide: Policy
    #: Run by the activity tracker for every experiment; None for policies that learn nothing.
    learner: Learner | None = None
    #: A promise that lets a replay decide once for a run of requests (core.sim.simulator's minute runs):
    #: the decision depends on the activity only through what was learned, the width, the measured cold
    #: start and whether the gap between the latest two requests exceeds this many seconds — activities
    #: that agree on those, with gaps at most this long, get the same decision. 0: no promise (every
    #: request is decided on its own); every built-in policy makes one.
    steady_gap_s: float = 0.0

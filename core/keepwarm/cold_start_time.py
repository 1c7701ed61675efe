"""How long an experiment's cold start takes, as measured: what its plans price and its pre-warms cover.

Why this module exists: a cold start of a model that loads in 40 s costs its users twenty times the
wait of one that loads in 2 s, and a pre-warm started 60 s ahead of a request is late for a model
that takes 90 s to start. Both backends measure every container's start (core.serving.prediction's
`ColdStart.total_s`: from the request's arrival until the container was ready, the model load
included — so a bigger model's longer load is in it). This module keeps one number per experiment
from those measurements, and the two rules built on it:

- **The estimate** follows a slower start at once and a faster one halfway (`measured`): a pre-warm
  led by it is never shorter than the latest measurement, and one slow start (a cold disk, a busy
  host) fades after a few normal ones. Two processes' estimates merge to the larger (`merged`).
- **The price factor** (`price_factor`) scales a cold start's price in idle container-minutes by
  (T + c) / 2T for a measured cold start of c seconds, T = `TYPICAL_COLD_START_S`: half of the price
  is the cold start having happened (it counts against the owner's cold-start rate however short),
  half its length. Unmeasured experiments (and the simulator's traces, which carry no start times) are
  priced as typical, factor 1.
"""

from __future__ import annotations

from dataclasses import dataclass

#: T, seconds: the cold start the policy's κ is priced for (a model of a few hundred MB on a GPU host).
TYPICAL_COLD_START_S = 30.0


def measured(estimate: float | None, seconds: float) -> float:
    """The estimate after one more measured cold start of `seconds`: a slower start at once, a faster
    one halfway."""
    seconds = max(0.0, float(seconds))
    if estimate is None or seconds >= estimate:
        return seconds
    return (estimate + seconds) / 2


def merged(a: float | None, b: float | None) -> float | None:
    """Two processes' estimates of the same experiment: the larger (a pre-warm must cover both)."""
    if a is None:
        return b
    return a if b is None else max(a, b)


def price_factor(cold_start_s: float | None) -> float:
    """(T + c) / 2T: what a cold start of `cold_start_s` costs against a typical one (None: typical, 1)."""
    if cold_start_s is None:
        return 1.0
    return (TYPICAL_COLD_START_S + cold_start_s) / (2 * TYPICAL_COLD_START_S)


def lead_s(base_lead_s: float, cold_start_s: float | None) -> float:
    """Seconds a pre-warm starts before its request is due: the configured lead, or the experiment's
    measured cold start where that is longer."""
    return base_lead_s if cold_start_s is None else max(base_lead_s, cold_start_s)


@dataclass(frozen=True)
class PrewarmLead:
    """How early a platform starts a pre-warm: `base_s` real seconds (HYBRID_PREWARM_LEAD_S) or the
    experiment's measured cold start where longer, in a clock running `time_scale` times faster."""

    base_s: float = 0.0
    time_scale: float = 1.0

    def of(self, cold_start_s: float | None) -> float:
        """The lead for an experiment of this measured cold start, in the activity's clock."""
        return self.real_s(cold_start_s) * self.time_scale

    def real_s(self, cold_start_s: float | None) -> float:
        """The lead for an experiment of this measured cold start, in real seconds."""
        return lead_s(self.base_s, cold_start_s)

"""The adaptive keep-warm policy: windows (and pre-warms) learned from each experiment's own idle times.

Why this module exists: the guide's hybrid policy treats every experiment alike; real traffic is a
mix of cron-like jobs, steady services and one-offs. `AdaptiveLearner` picks, from the experiment's
idle-gap histogram (core.keepwarm.histogram), the keep-alive window W that minimises
idle minutes + κ · cold starts  over the experiment's own gap history, where κ ("price of a cold
start in idle minutes", the one knob) trades cold starts for idle time. For a regular experiment
(its gaps concentrated in a narrow band well above one minute) it pre-warms instead: scale to zero
after the request and bring a container back just before the next one is due. `adaptive_window`
turns the learned plan into a decision within Modal's 2..3600 s, falling back to the hybrid policy
while the history is too short.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.histogram import BINS, IdleHistogram, Plan
from core.keepwarm.hybrid import HybridParams, hybrid_window
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S

MAX_WINDOW_MIN = MODAL_MAX_WINDOW_S // 60


def _log_uniform_prior() -> "object":
    import numpy as np

    weights = np.zeros(BINS)
    weights[2:] = 1.0 / np.arange(2, BINS)
    return weights / weights.sum()


_PRIOR = _log_uniform_prior()


@dataclass(frozen=True)
class AdaptiveParams:
    kappa: float = 320.0  # price of one cold start, in idle container-minutes (default: from the 2019 sweep)
    min_gaps: int = 4  # history needed before the histogram is trusted (else: hybrid)
    prior: float = 2.0  # pseudo-gaps spread log-uniformly over 2..239 min: pauses not yet seen still cost
    fallback: HybridParams = HybridParams(900, 900, 300)


def best_plan(hist: IdleHistogram, kappa: float, prior: float) -> Plan:
    """argmin over (p, w) of  idle + κ·cold  on the experiment's gaps g (whole minutes, ≥ 1), with
    the simulator's minute-mode rules: no pre-warm (p = 0): g ≤ w warm with idle g − 1, else cold
    with idle w; pre-warm after p ≥ 2 minutes: g < p cold (no idle), p ≤ g ≤ p + w warm with idle
    g − p, else cold with idle w. Gaps beyond the histogram's range are cold. An optimal plan starts
    and ends at populated minutes, so only those starts are tried."""
    import numpy as np

    counts = np.frombuffer(hist.counts, dtype=np.uint32).astype(np.float64)
    counts[0] = 0.0  # gaps under a minute never leave the minute: no cost either way
    populated = np.nonzero(counts)[0]
    if prior:
        counts = counts + prior * _PRIOR
    c = np.cumsum(counts)  # C[x]: gaps of ≤ x minutes
    g = np.cumsum(counts * np.arange(BINS, dtype=np.float64))  # S[x]: their minutes
    total = c[-1] + hist.out_of_range
    starts = np.concatenate(([0], populated[populated >= 2]))
    w = np.arange(1, MAX_WINDOW_MIN + 1)[None, :]
    p = starts[:, None]
    lo = np.maximum(p, 1)
    hi = np.minimum(p + w, BINS - 1)
    before = c[lo - 1]
    in_band = c[hi] - before
    idle = (g[hi] - g[lo - 1]) - lo * in_band
    after = total - c[hi]
    cost = idle + w * after + kappa * (before + after)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    prewarm_min, keep_min = int(starts[i]), int(w[0, j])
    if prewarm_min:
        return Plan(keep_min, prewarm_min, detail=f"pre-warm after {prewarm_min} min, keep {keep_min} min")
    return Plan(keep_min, detail=f"{keep_min} min minimises idle + {kappa:g}·cold starts")


@dataclass(frozen=True)
class AdaptiveLearner:
    """The `Learner` the activity tracker runs for the adaptive policy."""

    kappa: float
    prior: float

    def plan(self, histogram: IdleHistogram) -> Plan:
        return best_plan(histogram, self.kappa, self.prior)


def adaptive_window(activity: ExperimentActivity | None, params: AdaptiveParams) -> WindowDecision:
    """The learned plan as a window within Modal's bounds; the hybrid policy while history is short."""
    learned = activity.learned if activity is not None else None
    if learned is None or learned.gaps < params.min_gaps:
        fallback = hybrid_window(activity, params.fallback)
        return WindowDecision(fallback.window_s, fallback.reason, f"adaptive: too little history, hybrid: {fallback.detail}")
    plan = learned.plan
    return WindowDecision(_bounded(plan.keep_min * 60), WindowReason.LEARNED,
                          f"learned from {learned.gaps} gaps: {plan.detail}",
                          prewarm_after_s=plan.prewarm_min * 60 if plan.prewarm_min else None)


def _bounded(seconds: float) -> int:
    return int(min(MODAL_MAX_WINDOW_S, max(MODAL_MIN_WINDOW_S, seconds)))


def adaptive_policy(params: AdaptiveParams, name: str = "adaptive") -> NamedPolicy:
    learner = AdaptiveLearner(params.kappa, params.prior)
    return NamedPolicy(name, lambda activity: adaptive_window(activity, params), learner)

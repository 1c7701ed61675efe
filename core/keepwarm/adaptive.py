"""The adaptive keep-warm policy: windows (and pre-warms) learned from each experiment's own idle times,
priced so that every experiment's owner is served, not only the total.

Why this module exists: the guide's hybrid policy treats every experiment alike; real traffic is a
mix of cron-like jobs, steady services and one-offs. `AdaptiveLearner` picks, from the experiment's
idle-gap histogram (core.keepwarm.histogram), the plan — a keep-alive window W, or a pre-warm p
minutes after the request kept for W — that minimises  idle minutes + κ_e · cold starts  over what
is known of the experiment's gaps. `adaptive_window` turns the plan into a decision within Modal's
2..3600 s. Three principles make the plan hold up on traffic it has never seen:

1. **Each experiment's cold start has its own price.** The platform counts cold starts; an owner sees
   their experiment's cold-start *rate*, cold / n. Over a period P an experiment with mean gap ḡ
   between requests makes n = P / ḡ requests, so one cold start raises its owner's rate by ḡ / P:
   in proportion to its mean gap. The price is therefore κ_e = κ · (τ + ḡ_e) / (τ + ḡ₀): the
   platform's share (τ) plus the owner's (ḡ_e), normalised so that an experiment about which
   nothing is known yet (ḡ = ḡ₀, the prior's mean gap) pays κ. τ (15 min) is where both weigh the
   same: a cold start of an experiment requested every τ counts half for the total, half for its
   owner. A rarely used experiment's few cold starts are its owner's whole experience, so bridging
   its gaps is worth more than bridging a busy experiment's — the marginal value the oracle misses.
2. **Confidence comes from a prior.** The histogram is read as a Dirichlet posterior: `prior`
   pseudo-gaps spread log-uniformly over 2..239 minutes (scale-free: a pause of 5 minutes is as
   likely as one of 50 to an experiment we know nothing about) are added to the observed gaps, and
   ḡ_e is shrunk towards ḡ₀ the same way. With no history the prior alone decides (from the very
   first request: no hand-written fallback); each observed gap weighs as much as a pseudo-gap, so
   the prior fades after a handful of gaps.
3. **A pre-warm is a bet that an idle time repeats.** Scaling to zero and coming back p minutes later
   turns every shorter gap into a cold start, so p must be an idle time the experiment has shown at
   least `prewarm_evidence` (3) times — one or two equal gaps are a coincidence, not a period.

4. **An extra container has its own window.** A burst's extra containers are needed again only when
   the experiment runs as many requests at once again — after its *burst gap*
   (core.keepwarm.burst_levels), usually far shorter or far longer than its idle gaps. Keeping an
   extra container for w minutes bridges the burst gaps up to w and costs w for each longer one, so
   `best_burst_minutes` minimises the same  idle + κ_e · cold starts  over the burst gaps, and a window
   shorter than the last container's becomes the plan's burst window (plans without pre-warm: a
   pre-warm plan brings back the experiment's width instead, core.keepwarm.controller).
5. **A slow start costs more.** κ_e is scaled by the experiment's measured cold start, c seconds:
   (T + c) / 2T with T = 30 s (core.keepwarm.cold_start_time) — a 90 s start is priced twice a typical
   one, a 2 s start about half. A slow-loading experiment is therefore kept longer and pre-warmed sooner
   (a pre-warm's lead covers the measured start too: core.keepwarm.controller); an experiment not
   measured yet is priced as typical.

κ (HYBRID_ADAPTIVE_KAPPA) is the one knob: the price of a cold start of an unknown experiment, in
idle container-minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache, partial

import numpy as np

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.cold_start_time import price_factor
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.histogram import BINS, IdleHistogram, Plan
from core.keepwarm.hybrid import HybridParams, hybrid_window
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S

MAX_WINDOW_MIN = MODAL_MAX_WINDOW_S // 60
_MINUTES = np.arange(BINS, dtype=np.float64)
_WINDOWS = np.arange(1, MAX_WINDOW_MIN + 1)
#: Where a pre-warm at p kept for w ends, clipped to the histogram's range: _PREWARM_END[p, w − 1].
_PREWARM_END = np.minimum(np.arange(BINS)[:, None] + _WINDOWS[None, :], BINS - 1)


def _log_uniform_prior() -> np.ndarray:
    weights = np.zeros(BINS)
    weights[2:] = 1.0 / _MINUTES[2:]
    return weights / weights.sum()


_PRIOR = _log_uniform_prior()
_PRIOR_COUNT = np.cumsum(_PRIOR)  # prior mass of gaps of ≤ x minutes
_PRIOR_MINUTES = np.cumsum(_PRIOR * _MINUTES)  # and their minutes
#: ḡ₀: the mean gap, in minutes, of an experiment about which nothing is known (the prior's mean).
PRIOR_MEAN_GAP_MIN = float(_PRIOR_MINUTES[-1])


@dataclass(frozen=True)
class AdaptiveParams:
    #: κ: price of one cold start of an experiment about which nothing is known, in idle container-minutes.
    kappa: float = 320.0
    #: τ, minutes: the platform's share of a cold start's price against its owner's (ḡ_e): equal for an
    #: experiment requested every τ.
    owner_minutes: float = 15.0
    #: Pseudo-gaps spread log-uniformly over 2..239 min (the prior's weight against observed gaps).
    prior: float = 2.0
    #: A pre-warm point must be an idle time seen at least this many times.
    prewarm_evidence: int = 3
    #: An extra container's cold start, priced as this many of the experiment's first container's (κ_e).
    burst_price: float = 1.0
    #: Requests one container takes at once (MODAL_CONCURRENT_INPUTS): more in flight need another container.
    concurrent_inputs: int = 1
    #: The decision when nothing is remembered of the experiment (no activity, or no learner ran).
    fallback: HybridParams = HybridParams(900, 900, 300)


@lru_cache(maxsize=8)
def _scaled_prior(weight: float) -> tuple[np.ndarray, np.ndarray]:
    """`weight` pseudo-gaps of the prior: how many are of ≤ x minutes, and their minutes."""
    return weight * _PRIOR_COUNT, weight * _PRIOR_MINUTES


def mean_gap_minutes(hist: IdleHistogram, prior: float) -> float:
    """ḡ_e: the experiment's mean idle gap, shrunk towards the prior's mean by `prior` pseudo-gaps."""
    weight = hist.total + prior
    return (hist.seconds / 60 + prior * PRIOR_MEAN_GAP_MIN) / weight if weight else PRIOR_MEAN_GAP_MIN


def cold_start_price(hist: IdleHistogram, params: AdaptiveParams, cold_start_s: float | None = None) -> float:
    """κ_e = κ · (τ + ḡ_e) / (τ + ḡ₀) · (T + c) / 2T: what one cold start of this experiment costs, in
    idle minutes (c: its measured cold start in seconds; None: not measured, priced as typical)."""
    tau = params.owner_minutes
    return (params.kappa * (tau + mean_gap_minutes(hist, params.prior)) / (tau + PRIOR_MEAN_GAP_MIN)
            * price_factor(cold_start_s))


def best_plan(hist: IdleHistogram, params: AdaptiveParams, cold_start_s: float | None = None) -> Plan:
    """argmin over (p, w) of  idle + κ_e·cold  on the experiment's gaps g (whole minutes, ≥ 1) and the
    prior's pseudo-gaps, with the simulator's minute-mode rules: no pre-warm (p = 0): g ≤ w warm with
    idle g − 1, else cold with idle w; pre-warm after p ≥ 2 minutes: g < p cold (no idle),
    p ≤ g ≤ p + w warm with idle g − p, else cold with idle w. Gaps beyond the histogram's range are
    cold. Candidate pre-warm points are the idle times seen at least `prewarm_evidence` times.

    With C[x] the gaps of ≤ x minutes, S[x] their minutes and T all gaps: keeping w costs
    S[w] − C[w] + (w + κ_e)(T − C[w]); pre-warming at p for w, with h = p + w,
    S[h] − S[p−1] − p(C[h] − C[p−1]) + w(T − C[h]) + κ_e(C[p−1] + T − C[h])."""
    if not hist.total:
        return _prior_plan(params, cold_start_s)
    return _solve(hist, params, f"{hist.total} gap{'s' if hist.total > 1 else ''}", cold_start_s)


@lru_cache(maxsize=64)
def _prior_plan(params: AdaptiveParams, cold_start_s: float | None) -> Plan:
    """The plan for an experiment with no gap yet: the prior's alone (the same for every such experiment
    of the same measured cold start)."""
    return _solve(IdleHistogram(), params, "the prior alone", cold_start_s)


def _solve(hist: IdleHistogram, params: AdaptiveParams, source: str, cold_start_s: float | None) -> Plan:
    counts = np.frombuffer(hist.counts, dtype=np.uint32).astype(np.float64)
    counts[0] = 0.0  # gaps under a minute never leave the minute: no cost either way
    prior_count, prior_minutes = _scaled_prior(params.prior)
    c = counts.cumsum()
    c += prior_count
    s = (counts * _MINUTES).cumsum()
    s += prior_minutes
    total = float(c[-1]) + hist.out_of_range
    kappa = cold_start_price(hist, params, cold_start_s)
    kept = c[1:MAX_WINDOW_MIN + 1]
    price_per_window = _WINDOWS + kappa
    cost = s[1:MAX_WINDOW_MIN + 1] - kept + price_per_window * (total - kept)
    j = int(cost.argmin())
    best, prewarm_min, keep_min = float(cost[j]), 0, j + 1
    evident = counts[2:] >= params.prewarm_evidence
    first = int(evident.argmax()) + 2
    # every pre-warm at p ≥ first leaves the gaps shorter than `first` cold: worth trying only if that is cheaper
    if evident[first - 2] and kappa * c[first - 1] < best:
        starts = np.flatnonzero(evident) + 2
        c_before, s_before = c[starts - 1], s[starts - 1]
        end = _PREWARM_END[starts]
        c_end = c[end]
        prewarm_cost = (s[end] - starts[:, None] * c_end + price_per_window * (total - c_end)
                        + (starts * c_before - s_before + kappa * c_before)[:, None])
        i, j = divmod(int(prewarm_cost.argmin()), MAX_WINDOW_MIN)
        if prewarm_cost[i, j] < best:
            prewarm_min, keep_min = int(starts[i]), j + 1
    return AdaptivePlan.of(keep_min, prewarm_min, source, kappa, mean_gap_minutes(hist, params.prior), cold_start_s)


def best_burst_minutes(bursts: IdleHistogram, hist: IdleHistogram, keep_min: int, params: AdaptiveParams,
                       cold_start_s: float | None = None) -> int | None:
    """The burst window in whole minutes: argmin over w ≤ `keep_min` of  Σ bridged gaps + (w + κ_e)·(gaps
    longer than w)  on the experiment's burst gaps (a gap in bin g, [g, g + 1) minutes, is bridged by
    w ≥ g + 1 and idles g + ½ on average). None: keeping extra containers as long as the last pays best."""
    if not bursts.total:
        return None
    keep_min = min(keep_min, MAX_WINDOW_MIN)
    counts = np.frombuffer(bursts.counts, dtype=np.uint32)[:keep_min].astype(np.float64)
    bridged = counts.cumsum()
    idle = (counts * (_MINUTES[:keep_min] + 0.5)).cumsum()
    cost = idle + (bursts.total - bridged) * (_WINDOWS[:keep_min] + params.burst_price * cold_start_price(hist, params, cold_start_s))
    j = int(cost.argmin())
    return j + 1 if j + 1 < keep_min else None


@dataclass(frozen=True, slots=True)
class AdaptivePlan(Plan):
    """A plan with the decision it makes, built once per recomputation: a request costs no allocation."""

    decision: WindowDecision = WindowDecision(MODAL_MIN_WINDOW_S, WindowReason.LEARNED, "")

    @classmethod
    def of(cls, keep_min: int, prewarm_min: int, source: str, price: float, mean_gap_min: float,
           cold_start_s: float | None = None) -> "AdaptivePlan":
        plan = f"pre-warm after {prewarm_min} min, keep {keep_min} min" if prewarm_min else f"keep {keep_min} min"
        start = "" if cold_start_s is None else f" ({cold_start_s:.1f} s measured)"
        detail = (f"learned from {source}: {plan}; a cold start{start} priced {price:.0f} idle min, "
                  f"mean gap {mean_gap_min:.0f} min")
        return cls(keep_min, prewarm_min, True, detail, decision=_learned_decision(keep_min, prewarm_min, detail))


def _learned_decision(keep_min: int, prewarm_min: int, detail: str) -> WindowDecision:
    return WindowDecision(_bounded(keep_min * 60), WindowReason.LEARNED, detail,
                          prewarm_after_s=prewarm_min * 60 if prewarm_min else None)


@dataclass(frozen=True)
class AdaptiveLearner:
    """The `Learner` the activity tracker runs for the adaptive policy."""

    params: AdaptiveParams

    @property
    def per_container(self) -> int:
        return self.params.concurrent_inputs

    def plan(self, histogram: IdleHistogram, bursts: IdleHistogram | None = None,
             cold_start_s: float | None = None) -> Plan:
        plan = best_plan(histogram, self.params, cold_start_s)
        if bursts is None or plan.prewarm_min:
            return plan
        burst_min = best_burst_minutes(bursts, histogram, plan.keep_min, self.params, cold_start_s)
        if burst_min is None:
            return plan
        detail = f"{plan.detail}; extra containers {burst_min} min (learned from {bursts.total} burst gaps)"
        return replace(plan, burst_keep_min=burst_min, detail=detail,
                       decision=replace(plan.decision, detail=detail, burst_window_s=_bounded(burst_min * 60)))


def adaptive_window(activity: ExperimentActivity | None, params: AdaptiveParams) -> WindowDecision:
    """The learned plan as a window within Modal's bounds (the hybrid policy when nothing is remembered)."""
    learned = activity.learned if activity is not None else None
    if learned is None:
        fallback = hybrid_window(activity, params.fallback)
        return WindowDecision(fallback.window_s, fallback.reason, f"adaptive: nothing learned, hybrid: {fallback.detail}")
    plan = learned.plan
    if isinstance(plan, AdaptivePlan):
        return plan.decision
    decision = _learned_decision(plan.keep_min, plan.prewarm_min, plan.detail)  # another learner's plan
    if plan.burst_keep_min is None or plan.prewarm_min or plan.burst_keep_min >= plan.keep_min:
        return decision
    return replace(decision, burst_window_s=_bounded(plan.burst_keep_min * 60))


def _bounded(seconds: float) -> int:
    return int(min(MODAL_MAX_WINDOW_S, max(MODAL_MIN_WINDOW_S, seconds)))


def adaptive_policy(params: AdaptiveParams, name: str = "adaptive") -> NamedPolicy:
    return NamedPolicy(name, partial(adaptive_window, params=params), AdaptiveLearner(params), steady_gap_s=math.inf)

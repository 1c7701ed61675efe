"""Keep-warm policies learned from each experiment's own idle times.

Why this module exists: the guide's hybrid policy treats every experiment alike; real traffic is a
mix of cron-like jobs, steady services and one-offs. Both policies here learn, online and per
experiment, the distribution of idle gaps (time between consecutive requests) in a bounded
histogram of one-minute bins over four hours (`IdleHistogram`, ≈ 1 KB):

- `adaptive_window` (the product's policy, `HYBRID_POLICY=adaptive`): pick the keep-alive window W
  that minimises  idle minutes + κ · cold starts  over the experiment's own gap history, where κ
  ("price of a cold start in idle minutes", the one knob) trades cold starts for idle time. For a
  regular experiment (its gaps concentrated in a narrow band well above one minute) it pre-warms
  instead: scale to zero after the request and bring a container back just before the next one is
  due. Windows stay within Modal's 2..3600 s; with too little history it falls back to the hybrid
  policy.
- `shahrad_histogram_window` (a reference competitor, Shahrad et al., "Serverless in the Wild",
  ATC 2020): pre-warm at the 5th percentile of idle times minus 10 %, keep alive until the 99th
  percentile plus 10 %; when the histogram is not representative (too few samples, bin counts with
  a coefficient of variation below 2, or most idle times beyond the 4-hour range) it falls back to a
  fixed keep-alive of the whole range. Used by the simulator only.

Decisions are pure functions of the activity snapshot (which carries the histogram) and the
parameters. The best window is recomputed only when the histogram changed since the last
computation — at most one O(bins) pass per request, O(1) in the number of requests.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from functools import partial
from typing import Callable

from core.activity import ExperimentActivity
from core.policy import HybridParams, WindowDecision, WindowReason, hybrid_window
from core.settings import MODAL_MAX_WINDOW_S, MODAL_MIN_WINDOW_S, Settings

BINS = 240  # one-minute bins: four hours
MAX_WINDOW_MIN = MODAL_MAX_WINDOW_S // 60


def _log_uniform_prior() -> "object":
    import numpy as np

    weights = np.zeros(BINS)
    weights[2:] = 1.0 / np.arange(2, BINS)
    return weights / weights.sum()


_PRIOR = _log_uniform_prior()


class IdleHistogram:
    """Counts of idle gaps by whole minutes (bin g holds gaps in [g, g+1) minutes), plus out-of-range."""

    __slots__ = ("counts", "out_of_range", "total", "_cache_total", "_cache")

    def __init__(self) -> None:
        self.counts = array("I", bytes(4 * BINS))
        self.out_of_range = 0
        self.total = 0
        self._cache_total = -1
        self._cache: object = None

    def add(self, gap_s: float) -> None:
        minute = int(gap_s // 60)
        if minute >= BINS:
            self.out_of_range += 1
        else:
            self.counts[minute] += 1
        self.total += 1

    def percentile_minutes(self, q: float) -> float:
        """The q-th percentile of in-range gaps, in minutes (upper edge of the bin that reaches it)."""
        in_range = self.total - self.out_of_range
        if in_range <= 0:
            return float(BINS)
        target, running = q / 100 * in_range, 0
        for minute, count in enumerate(self.counts):
            running += count
            if running >= target and count:
                return float(minute + 1)
        return float(BINS)

    def memoised(self, key: object, compute: Callable[[], object]) -> object:
        """`compute()`, recomputed once the histogram grew by ≥ 1/8 since (or for another key):
        O(log n) recomputations over n requests, so the decision cost is O(1) amortised."""
        grown = self.total - self._cache_total >= max(1, self._cache_total // 8)
        if grown or not isinstance(self._cache, tuple) or self._cache[0] != key:
            self._cache = (key, compute())
            self._cache_total = self.total
        return self._cache[1]  # type: ignore[index]

    def state_bytes(self) -> int:
        return self.counts.itemsize * len(self.counts) + 5 * 8


@dataclass(frozen=True)
class AdaptiveParams:
    kappa: float = 320.0  # price of one cold start, in idle container-minutes (default: from the 2019 sweep)
    min_gaps: int = 4  # history needed before the histogram is trusted (else: hybrid)
    prior: float = 2.0  # pseudo-gaps spread log-uniformly over 2..239 min: pauses not yet seen still cost
    prewarm: bool = True
    fallback: HybridParams = HybridParams(900, 900, 300)


@dataclass(frozen=True)
class Plan:
    prewarm_min: int  # 0: no pre-warm (keep warm right after the request); else ≥ 2
    keep_min: int
    cost: float


def best_plan(hist: IdleHistogram, kappa: float, prewarm: bool = True, prior: float = 0.0) -> Plan:
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
    starts = np.concatenate(([0], populated[populated >= 2])) if prewarm else np.array([0])
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
    return Plan(int(starts[i]), int(w[0, j]), float(cost[i, j]))


def adaptive_window(activity: ExperimentActivity | None, params: AdaptiveParams = AdaptiveParams()) -> WindowDecision:
    hist = activity.idle_histogram if activity is not None else None
    if hist is None or hist.total < params.min_gaps:
        fallback = hybrid_window(activity, params.fallback)
        return WindowDecision(fallback.window_s, fallback.reason, f"adaptive: too little history, hybrid: {fallback.detail}")

    def compute() -> WindowDecision:
        plan = best_plan(hist, params.kappa, params.prewarm, params.prior)
        if plan.prewarm_min:
            return WindowDecision(
                _bounded(plan.keep_min * 60), WindowReason.LEARNED,
                f"learned from {hist.total} gaps: pre-warm after {plan.prewarm_min} min, keep {plan.keep_min} min",
                prewarm_after_s=plan.prewarm_min * 60,
            )
        return WindowDecision(_bounded(plan.keep_min * 60), WindowReason.LEARNED,
                              f"learned from {hist.total} gaps: {plan.keep_min} min minimises idle + {params.kappa:g}·cold starts")

    return hist.memoised(("adaptive", params), compute)  # type: ignore[return-value]


def shahrad_histogram_window(activity: ExperimentActivity | None, range_min: int = BINS) -> WindowDecision:
    """Shahrad et al.'s hybrid histogram policy (reference; not bounded to Modal's 60 minutes)."""
    hist = activity.idle_histogram if activity is not None else None
    fixed = WindowDecision(range_min * 60, WindowReason.FIXED, "histogram not representative: keep alive for the range")
    if hist is None or hist.total < 2 or hist.out_of_range > hist.total / 2:
        return fixed

    def compute() -> WindowDecision:
        counts = [c for c in hist.counts]
        mean = sum(counts) / len(counts)
        cv = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)) / mean if mean else 0.0
        if cv < 2:
            return fixed
        head = math.floor(hist.percentile_minutes(5) * 0.9)
        tail = math.ceil(hist.percentile_minutes(99) * 1.1)
        if head <= 1:  # no pre-warm: keep loaded until the tail
            return WindowDecision(tail * 60, WindowReason.LEARNED, f"histogram: keep alive {tail} min")
        return WindowDecision((tail - head) * 60, WindowReason.LEARNED,
                              f"histogram: pre-warm after {head} min, keep {tail - head} min", prewarm_after_s=head * 60)

    return hist.memoised(("shahrad", range_min), compute)  # type: ignore[return-value]


def _bounded(seconds: float) -> int:
    return int(min(MODAL_MAX_WINDOW_S, max(MODAL_MIN_WINDOW_S, seconds)))


def adaptive_policy(kappa: float, fallback: HybridParams, prewarm: bool = True) -> Callable[[ExperimentActivity | None], WindowDecision]:
    return partial(adaptive_window, params=AdaptiveParams(kappa=kappa, prewarm=prewarm, fallback=fallback))


def policy_from_settings(settings: Settings) -> Callable[[ExperimentActivity | None], WindowDecision]:
    """The policy HYBRID_POLICY names, with its parameters from the settings."""
    fallback = HybridParams.from_settings(settings)
    if settings.policy_name == "adaptive":
        return adaptive_policy(settings.adaptive_kappa, fallback)
    return partial(hybrid_window, params=fallback)

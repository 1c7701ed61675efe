"""Shahrad et al.'s hybrid histogram policy ("Serverless in the Wild", USENIX ATC 2020): the reference competitor.

Why this module exists: the adaptive policy is judged against the state of the art on the same
traces, so the reference follows the paper (§4.2) rather than a convenient variant:

- **Idle times** (ITs) go into a range-limited histogram of one-minute bins over four hours. At the
  trace's one-minute resolution an IT is the distance between two invocation minutes; invocations
  within one minute make one busy minute (no idle time), so sub-minute gaps are left out.
- **Representativeness** is the coefficient of variation (standard deviation / mean) of the bin
  counts over the whole range: a histogram whose ITs gather in a few bins has CV ≥ 2
  (`CV_THRESHOLD`) and is trusted — pre-warm at its head, the 5th percentile minus 10 %, and keep
  alive until its tail, the 99th percentile plus 10 % (head: the lower edge of the bin that
  reaches 5 %, tail: the upper edge of the bin that reaches 99 %). ITs spread over the range
  (CV < 2), or no in-range IT yet, fall back to the standard keep-alive: no pre-warm, loaded for the
  whole range.
- **Out of range**: when most ITs exceed the range, the paper forecasts the next IT with ARIMA and
  pre-warms at the forecast minus 15 %, keeping the image loaded for 2 × 15 % of it. What stands in
  for ARIMA here is the forecast of the ARIMA(0,0,0) model, the mean IT so far (one running sum,
  no per-request series to keep): an experiment whose ITs mostly exceed four hours has at most five
  of them in a day, too few for an ARIMA fit to identify anything beyond their level.

Not bounded to Modal's 60 minutes (nor its pre-warm delay to four hours): it is simulated, never served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.histogram import BINS, IdleHistogram, Plan

HEAD_PERCENTILE, TAIL_PERCENTILE = 5.0, 99.0
HISTOGRAM_MARGIN, FORECAST_MARGIN = Fraction(10, 100), Fraction(15, 100)  # exact: 20 min + 10 % is 22, not 22.000000000000004
CV_THRESHOLD = 2.0

NOT_REPRESENTATIVE = Plan(BINS, representative=False, detail="histogram not representative: keep alive for the range")


def idle_time_counts(hist: IdleHistogram) -> list[int]:
    """The histogram's bin counts as the paper's IT histogram: sub-minute gaps (one busy minute) left out."""
    counts = list(hist.counts)
    counts[0] = 0
    return counts


def bin_count_cv(counts: list[int]) -> float:
    """Coefficient of variation of the bin counts (population standard deviation / mean); NaN when empty."""
    mean = sum(counts) / len(counts)
    if not mean:
        return math.nan
    return math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)) / mean


def _percentile_bin(counts: list[int], q: float) -> int:
    """The bin at which the cumulative count first reaches q % of the in-range ITs."""
    target, running = q / 100 * sum(counts), 0
    for minute, count in enumerate(counts):
        running += count
        if count and running >= target:
            return minute
    return len(counts) - 1


@dataclass(frozen=True)
class ShahradLearner:
    per_container: int = 1  # burst gaps are not used

    def plan(self, hist: IdleHistogram, bursts: IdleHistogram | None = None, cold_start_s: float | None = None) -> Plan:
        """The paper's plan (it keeps every container alike and prices no cold start: burst gaps and the
        measured cold start are not used)."""
        counts = idle_time_counts(hist)
        in_range = sum(counts)
        if hist.out_of_range > in_range:  # most ITs beyond the range: forecast the next one
            forecast_min = hist.seconds / 60 / (in_range + hist.out_of_range)
            prewarm = math.floor(Fraction(forecast_min) * (1 - FORECAST_MARGIN))
            keep = max(1, math.ceil(Fraction(forecast_min) * 2 * FORECAST_MARGIN))
            return Plan(keep, prewarm, detail=f"forecast IT {forecast_min:.0f} min (out of range): "
                                              f"pre-warm after {prewarm} min, keep {keep} min")
        cv = bin_count_cv(counts)
        if not cv >= CV_THRESHOLD:  # NaN (no in-range IT) included
            return NOT_REPRESENTATIVE
        head = math.floor(_percentile_bin(counts, HEAD_PERCENTILE) * (1 - HISTOGRAM_MARGIN))
        tail = math.ceil((_percentile_bin(counts, TAIL_PERCENTILE) + 1) * (1 + HISTOGRAM_MARGIN))
        if head <= 0:  # no pre-warm; keep loaded until the tail
            return Plan(tail, detail=f"histogram (CV {cv:.1f}): keep alive {tail} min")
        return Plan(tail - head, head, detail=f"histogram (CV {cv:.1f}): pre-warm after {head} min, keep {tail - head} min")


def shahrad_window(activity: ExperimentActivity | None) -> WindowDecision:
    learned = activity.learned if activity is not None else None
    plan = NOT_REPRESENTATIVE if learned is None else learned.plan
    if not plan.representative:
        return WindowDecision(plan.keep_min * 60, WindowReason.FIXED, plan.detail)
    return WindowDecision(plan.keep_min * 60, WindowReason.LEARNED, plan.detail,
                          prewarm_after_s=plan.prewarm_min * 60 if plan.prewarm_min else None)


SHAHRAD = NamedPolicy("histogram", shahrad_window, ShahradLearner(), steady_gap_s=math.inf)

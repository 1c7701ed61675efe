"""Shahrad et al.'s hybrid histogram policy ("Serverless in the Wild", ATC 2020): the reference competitor.

Why this module exists: the adaptive policy is judged against the state of the art on the same
traces. Pre-warm at the 5th percentile of the idle times minus 10 %, keep alive until the 99th
percentile plus 10 %; when the histogram is not representative (too few samples, bin counts with a
coefficient of variation below 2, or most idle times beyond the 4-hour range) keep alive for the
whole range. Not bounded to Modal's 60 minutes: it is simulated, never served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.histogram import BINS, IdleHistogram, Plan

NOT_REPRESENTATIVE = Plan(BINS, representative=False, detail="histogram not representative: keep alive for the range")


@dataclass(frozen=True)
class ShahradLearner:
    def plan(self, hist: IdleHistogram) -> Plan:
        if hist.total < 2 or hist.out_of_range > hist.total / 2:
            return NOT_REPRESENTATIVE
        counts = list(hist.counts)
        mean = sum(counts) / len(counts)
        cv = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)) / mean if mean else 0.0
        if cv < 2:
            return NOT_REPRESENTATIVE
        head = math.floor(hist.percentile_minutes(5) * 0.9)
        tail = math.ceil(hist.percentile_minutes(99) * 1.1)
        if head <= 1:  # no pre-warm: keep loaded until the tail
            return Plan(tail, detail=f"histogram: keep alive {tail} min")
        return Plan(tail - head, head, detail=f"histogram: pre-warm after {head} min, keep {tail - head} min")


def shahrad_window(activity: ExperimentActivity | None) -> WindowDecision:
    learned = activity.learned if activity is not None else None
    plan = NOT_REPRESENTATIVE if learned is None else learned.plan
    if not plan.representative:
        return WindowDecision(plan.keep_min * 60, WindowReason.FIXED, plan.detail)
    return WindowDecision(plan.keep_min * 60, WindowReason.LEARNED, plan.detail,
                          prewarm_after_s=plan.prewarm_min * 60 if plan.prewarm_min else None)


SHAHRAD = NamedPolicy("histogram", shahrad_window, ShahradLearner())

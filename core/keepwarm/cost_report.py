"""The ledger as an operator reads it: container-seconds and cost by state, for the last hour, today
(since midnight UTC) and since the ledger started.

Why this module exists: `/health`, `/experiments/{id}`, the dashboard and `recommend` all show the same
periods with the same units; one function renders them from a `UsageRecord` and a `Price`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from core.keepwarm.ledger import STATES, ContainerState, UsageRecord
from core.prices import Price

HOUR_S = 3600


def midnight_utc(now: float) -> float:
    day = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def period_view(seconds: dict[ContainerState, float], price: Price) -> dict[str, Any]:
    """Seconds and cost by state, and their totals (cost: None when no price is known)."""
    total = sum(seconds.values())
    cost = price.cost(total)
    return {
        "container_seconds": {s.value: round(seconds[s], 3) for s in STATES},
        "total_seconds": round(total, 3),
        "cost": None if cost is None else {s.value: round(price.cost(seconds[s]) or 0.0, 6) for s in STATES},
        "total_cost": None if cost is None else round(cost, 6),
    }


def usage_view(record: UsageRecord, price: Price) -> dict[str, Any]:
    """One experiment's (or a sum's) periods, as of the record's `as_of` (last hour and today to the minute)."""
    now = record.as_of
    return {
        "containers": record.containers,
        "last_hour": period_view(record.between(now - HOUR_S, now), price),
        "today": period_view(record.between(midnight_utc(now), now), price),
        "since_start": period_view(record.total, price),
    }


def summed(records: Iterable[UsageRecord], as_of: float, experiment_id: str = "*") -> UsageRecord:
    """Records added up: every experiment's (the endpoint's total, "*"), or one experiment's containers'."""
    out = UsageRecord(experiment_id, as_of)
    for record in records:
        out.containers += record.containers
        for state, value in record.total.items():
            out.total[state] += value
        for minute, secs in record.minutes.items():
            bucket = out.minutes.setdefault(minute, {s: 0.0 for s in STATES})
            for state, value in secs.items():
                bucket[state] += value
    return out


def cost_section(usage: dict[str, UsageRecord] | None, price: Price, backend: str, now: float) -> dict[str, Any]:
    """`/health`'s cost: the price, every experiment's periods and their sum (or why nothing is measured)."""
    if usage is None:
        return {"measured": False, "price": price.describe(),
                "why": f"the {backend} backend does not report its containers' lifecycles to the ledger yet"}
    return {"measured": True, "price": price.describe(), "all": usage_view(summed(usage.values(), now), price),
            "experiments": {e: usage_view(r, price) for e, r in usage.items()}}


def experiment_cost(usage: dict[str, UsageRecord] | None, experiment_id: str, price: Price, backend: str,
                    now: float) -> dict[str, Any]:
    """`/experiments/{id}`'s cost: the experiment's periods (zero if it never ran a container)."""
    if usage is None:
        return cost_section(None, price, backend, now)
    record = usage.get(experiment_id) or UsageRecord(experiment_id, now)
    return {"measured": True, "price": price.describe(), "as_of": record.as_of, **usage_view(record, price)}


def today(usage: dict[str, UsageRecord] | None, experiment_id: str, price: Price, now: float) -> dict[str, Any] | None:
    """An `/experiments` row's cost: today's seconds and cost (None: not measured on this backend)."""
    if usage is None:
        return None
    record = usage.get(experiment_id) or UsageRecord(experiment_id, now)
    return period_view(record.between(midnight_utc(record.as_of), record.as_of), price)


def totals(usage: dict[str, UsageRecord] | None) -> dict[str, dict[str, float]]:
    """Experiment → state → container-seconds since start (the Prometheus counters)."""
    return {e: {s.value: v for s, v in r.total.items()} for e, r in (usage or {}).items()}

"""The ledger as an operator reads it: container-seconds and cost by state, for the last hour, today
(since midnight UTC) and since the ledger started.

Why this module exists: `/health`, `/experiments/{id}`, the dashboard and `recommend` all show the same
periods with the same units; one function renders them from a `UsageRecord` and a `Price`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from core.keepwarm.ledger import STATES, ContainerState, UsageRecord
from core.prices import Price

HOUR_S = 3600


def midnight_utc(now: float) -> float:
    day = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


#: The price of one experiment's container-seconds (its own GPU, or the deploy's).
PriceOf = Callable[[str], Price]


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


def usage_view(record: UsageRecord, price: Price, now: float) -> dict[str, Any]:
    """One experiment's periods up to `now` (the last hour and today to the minute). A record published
    earlier (`as_of`) counts nothing after it: a container it counted as running is shown at `as_of`."""
    return {
        "containers": record.containers,
        "price": {"gpu": price.gpu, "per_second": price.per_second},
        "last_hour": period_view(record.between(now - HOUR_S, now), price),
        "today": period_view(record.between(midnight_utc(now), now), price),
        "since_start": period_view(record.total, price),
    }


def _sum_periods(periods: list[dict[str, Any]]) -> dict[str, Any]:
    """Period views of several experiments added up (each priced at its own rate)."""
    costs = [p["cost"] for p in periods]
    known = all(c is not None for c in costs)
    return {
        "container_seconds": {s.value: round(sum(p["container_seconds"][s.value] for p in periods), 3) for s in STATES},
        "total_seconds": round(sum(p["total_seconds"] for p in periods), 3),
        "cost": {s.value: round(sum(c[s.value] for c in costs), 6) for s in STATES} if known else None,
        "total_cost": round(sum(p["total_cost"] for p in periods), 6) if known else None,
    }


def total_view(views: list[dict[str, Any]]) -> dict[str, Any]:
    """Every experiment's `usage_view` together (the endpoint's total)."""
    out: dict[str, Any] = {"containers": sum(v["containers"] for v in views)}
    for period in ("last_hour", "today", "since_start"):
        out[period] = _sum_periods([v[period] for v in views])  # none: zeros
    return out


def summed(records: Iterable[UsageRecord], as_of: float, experiment_id: str) -> UsageRecord:
    """One experiment's records added up (its containers' own records, on Modal)."""
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


#: What a backend's usage read gave: the records, None (the backend does not report), or why it failed.
Usage = dict[str, UsageRecord] | None | str


def measured(usage: Usage) -> dict[str, UsageRecord] | None:
    """The records, where the backend reported them."""
    return None if usage is None or isinstance(usage, str) else usage


def _unmeasured(usage: Usage, price: Price, backend: str) -> dict[str, Any]:
    why = (f"the cost ledger could not be read: {usage}" if isinstance(usage, str)
           else f"the {backend} backend does not report its containers' lifecycles to the ledger")
    return {"measured": False, "price": price.describe(), "why": why}


def cost_section(usage: Usage, price_of: PriceOf, price: Price, backend: str, now: float) -> dict[str, Any]:
    """`/health`'s cost: the deploy's price, every experiment's periods and their sum (or why nothing is
    measured)."""
    records = measured(usage)
    if records is None:
        return _unmeasured(usage, price, backend)
    views = {e: usage_view(r, price_of(e), now) for e, r in records.items()}
    return {"measured": True, "price": price.describe(), "all": total_view(list(views.values())), "experiments": views}


def experiment_cost(usage: Usage, experiment_id: str, price: Price, backend: str, now: float) -> dict[str, Any]:
    """`/experiments/{id}`'s cost: the experiment's periods at its price (zero if it never ran a container)."""
    records = measured(usage)
    if records is None:
        return _unmeasured(usage, price, backend)
    record = records.get(experiment_id) or UsageRecord(experiment_id, now)
    return {"measured": True, "as_of": record.as_of, **usage_view(record, price, now), "price": price.describe()}


def today(usage: Usage, experiment_id: str, price: Price, now: float) -> dict[str, Any] | None:
    """An `/experiments` row's cost: today's seconds and cost (None: not measured)."""
    records = measured(usage)
    if records is None:
        return None
    record = records.get(experiment_id) or UsageRecord(experiment_id, now)
    return period_view(record.between(midnight_utc(now), now), price)


def totals(usage: Usage) -> dict[str, dict[str, float]]:
    """Experiment → state → container-seconds since start (the Prometheus counters)."""
    return {e: {s.value: v for s, v in r.total.items()} for e, r in (measured(usage) or {}).items()}

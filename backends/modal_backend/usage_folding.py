"""Stopped containers' cost-ledger records folded into one durable total per experiment.

Why this module exists: every model container publishes its own record under
`usage/<experiment>/<container>` (container_lives.py), and a stopped container's key is never written
again — so modal's Dict would drop it after 7 days without a read or write, and with it the
experiment's history; and the keys would pile up, one per container ever started. The reconciler
(the deployment's one durable writer) folds each stopped container's record into
`usage-total/<experiment>` and deletes the container's key, and re-writes a total that has not
changed for `REFRESH_S` so it never reaches the expiry. A total names the keys it folded in its last
passes, so an ingress that listed a container's key just before the fold does not count it twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from backends.modal_backend.container_lives import USAGE
from backends.modal_backend.state_store import StateStore
from core.keepwarm.cost_report import summed
from core.keepwarm.ledger import UsageRecord

log = logging.getLogger("hybrid_serve.modal.usage_folding")

TOTAL = "usage-total/"
#: A total unchanged this long is written again (modal drops a Dict entry after 7 days untouched).
REFRESH_S = 2 * 86400.0
#: How many passes' folded keys a total remembers (a reading lists keys, then reads them: one pass apart at most).
REMEMBERED_PASSES = 2


def total_key(experiment_id: str) -> str:
    return f"{TOTAL}{experiment_id}"


class Total:
    """One experiment's folded record, when it was written, and the container keys its last passes folded."""

    def __init__(self, record: UsageRecord, written_at: float, folded: list[list[str]]):
        self.record, self.written_at, self.folded = record, written_at, folded

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "Total":
        return cls(UsageRecord.from_json(value["record"]), float(value["written_at"]),
                   [list(keys) for keys in value.get("folded", [])])

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record.to_json(), "written_at": self.written_at, "folded": self.folded}

    def folded_keys(self) -> set[str]:
        return {key for keys in self.folded for key in keys}


async def fold_usage(store: StateStore, keys: list[str], now: float | None = None) -> int:
    """One pass: fold every stopped container's record into its experiment's total, delete its key,
    refresh totals that would otherwise expire. Returns how many records were folded. A record or
    total that cannot be read is left for the next pass (nothing is deleted that was not folded)."""
    now = time.time() if now is None else now
    stopped: dict[str, list[tuple[str, UsageRecord]]] = {}
    for key in (k for k in keys if k.startswith(USAGE)):
        try:
            value = await store.get(key)
            record = None if value is None else UsageRecord.from_json(value)
        except Exception as exc:
            log.warning("usage fold: could not read %s: %s: %s", key, type(exc).__name__, exc)
            continue
        if record is not None and record.containers == 0:  # stopped: it is never written again
            stopped.setdefault(record.experiment_id, []).append((key, record))
    folded = 0
    for experiment_id in {k[len(TOTAL):] for k in keys if k.startswith(TOTAL)} | set(stopped):
        try:
            folded += await _fold_one(store, experiment_id, stopped.get(experiment_id, []), now)
        except Exception as exc:
            log.warning("usage fold: %s: %s: %s", experiment_id, type(exc).__name__, exc)
    return folded


async def _fold_one(store: StateStore, experiment_id: str, stopped: list[tuple[str, UsageRecord]], now: float) -> int:
    value = await store.get(total_key(experiment_id))
    total = None if value is None else Total.from_json(value)
    already = total.folded_keys() if total is not None else set()
    remaining = [k for k, _ in stopped if k in already]  # folded by a pass whose pop failed: only delete it
    for key in remaining:  # (named again below: a reader that listed it still skips it)
        await store.pop(key)
    stopped = [(k, r) for k, r in stopped if k not in already]
    if not stopped:
        if total is not None and now - total.written_at >= REFRESH_S:
            total.written_at, total.folded = now, total.folded[-REMEMBERED_PASSES + 1:] + [[]]
            total.record.prune(now)
            await store.put(total_key(experiment_id), total.to_json())
        return 0
    records = [r for _, r in stopped] + ([total.record] if total is not None else [])
    record = summed(records, max(r.as_of for r in records), experiment_id)  # stopped: 0 containers running
    record.prune(now)  # minute buckets older than the ledger keeps go; the totals stay
    history = (total.folded if total is not None else [])[-REMEMBERED_PASSES + 1:]
    passed = [k for k, _ in stopped] + remaining
    await store.put(total_key(experiment_id), Total(record, now, history + [passed]).to_json())
    for key, _ in stopped:  # only once the total that holds it is written
        await store.pop(key)
    return len(stopped)


async def read_totals(store: StateStore, keys: list[str]) -> dict[str, Total]:
    """Every experiment's folded total (one that cannot be read is left out of this reading)."""
    out = {}
    for key in (k for k in keys if k.startswith(TOTAL)):
        try:
            value = await store.get(key)
            if value is not None:
                out[key[len(TOTAL):]] = Total.from_json(value)
        except Exception as exc:
            log.warning("could not read the folded usage %s: %s: %s", key, type(exc).__name__, exc)
    return out

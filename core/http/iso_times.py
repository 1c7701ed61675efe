"""Epoch times in the state views, also in ISO 8601 UTC.

Why this module exists: `/health` and `/experiments` carry wall times as epoch seconds (for programs);
a person reading them wants a date. Every key that names a moment — `at`, `*_at`, `as_of` — gets an
`_iso` sibling, in one pass over the answer, so no view can forget one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

#: Epoch seconds before this are durations or emulated clocks, never wall times (2001-09-09).
EPOCH_FLOOR = 1e9


def iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _moment(key: str, value: Any) -> bool:
    return ((key == "at" or key.endswith("_at") or key == "as_of") and isinstance(value, (int, float))
            and not isinstance(value, bool) and value >= EPOCH_FLOOR)


def with_iso_times(tree: Any) -> Any:
    """`tree` with an `<key>_iso` beside every wall-time key (a new tree; `tree` is unchanged)."""
    if isinstance(tree, dict):
        out: dict[Any, Any] = {}
        for key, value in tree.items():
            out[key] = with_iso_times(value)
            if isinstance(key, str) and _moment(key, value):
                out[f"{key}_iso"] = iso_utc(value)
        return out
    if isinstance(tree, list):
        return [with_iso_times(item) for item in tree]
    return tree

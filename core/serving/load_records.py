"""Each experiment's load history in a model cache: its state, cold loads, warm hits, evictions.

Why this module exists: `/experiments` shows why an experiment is slow or failing — how often its
model was loaded, how long the last load took, whether the cache evicted it, the last load error —
and a worker asks whether its model failed. The history outlives the model (an evicted or failed
model keeps its record), so it is kept apart from the models themselves; the cache's lock guards it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.serving.model_status import ModelState


@dataclass
class LoadRecord:
    """Per-experiment load history."""

    state: ModelState = ModelState.COLD
    cold_loads: int = 0
    last_cold_load_s: float | None = None
    warm_hits: int = 0
    last_warm_lookup_s: float | None = None
    evictions: int = 0
    last_error: str | None = None
    size_bytes: int | None = None
    #: The precision its last load runs in, and why it is not the registry's dtype (None: it is).
    dtype_in_use: str | None = None
    dtype_note: str | None = None

    def precision(self) -> dict[str, str | None]:
        """`ModelStatus`'s precision fields."""
        return {"dtype_in_use": self.dtype_in_use, "dtype_note": self.dtype_note}


class LoadRecords:
    """The load history of every experiment a cache has tried to load, in first-seen order (not
    thread-safe: its cache holds the lock)."""

    def __init__(self) -> None:
        self._records: dict[str, LoadRecord] = {}

    def _record(self, experiment_id: str) -> LoadRecord:
        return self._records.setdefault(experiment_id, LoadRecord())

    def copy(self, experiment_id: str) -> LoadRecord:
        """A copy of the experiment's record (a fresh, cold one if it was never loaded)."""
        return LoadRecord(**vars(self._records.get(experiment_id, LoadRecord())))

    def ids(self) -> list[str]:
        return list(self._records)

    def loading(self, experiment_id: str) -> None:
        self._record(experiment_id).state = ModelState.LOADING

    def warm_hit(self, experiment_id: str, lookup_s: float) -> None:
        record = self._record(experiment_id)
        record.warm_hits += 1
        record.last_warm_lookup_s = lookup_s

    def loaded(self, experiment_id: str, load_s: float, size_bytes: int, dtype_in_use: str | None = None,
               dtype_note: str | None = None) -> None:
        record = self._record(experiment_id)
        record.state, record.last_error = ModelState.WARM, None
        record.cold_loads += 1
        record.last_cold_load_s = load_s
        record.size_bytes = size_bytes
        record.dtype_in_use, record.dtype_note = dtype_in_use, dtype_note

    def failed(self, experiment_id: str, error: str) -> None:
        record = self._record(experiment_id)
        record.state, record.last_error = ModelState.FAILED, error

    def evicted(self, experiment_id: str) -> None:
        record = self._record(experiment_id)
        record.state = ModelState.COLD
        record.evictions += 1

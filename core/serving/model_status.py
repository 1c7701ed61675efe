"""What a backend reports of an experiment's model: one typed `ModelStatus`, whatever the backend.

Why this module exists: `/health`, `/experiments` and `/metrics` describe each experiment's model
(its state, its containers, its last cold start and error) while three backends know different
things of it — the in-process engine its load history, Ray its replicas by state, Modal the pool and
the window the reconciler applied. One frozen shape, with the backend-specific parts as optional
fields, lets the views render it without guessing; `to_json` is its JSON, the same on every backend
plus that backend's own fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class ModelState(StrEnum):
    """Where an experiment's model stands (its value is what the API shows)."""

    COLD = "cold"
    LOADING = "loading"  # in-process: its model is loading
    STARTING = "starting"  # a container (replica) is starting for it
    WARM = "warm"
    SCALING_DOWN = "scaling down"  # containers are stopping
    FAILED = "failed"  # its model failed to load, last we heard


@dataclass(frozen=True)
class LoadHistory:
    """In-process: the experiment's model loads in this process (times in milliseconds)."""

    cold_loads: int
    last_cold_load_ms: float | None
    warm_hits: int
    last_warm_lookup_ms: float | None
    evictions: int
    size_bytes: int | None


@dataclass(frozen=True)
class PoolWindow:
    """Modal: the pool serving the experiment and the window in force on it when this was checked."""

    window_in_force_s: float
    checked_at: float
    pool: str | None


@dataclass(frozen=True)
class ModelStatus:
    """One experiment's model as its backend sees it now."""

    state: ModelState
    #: Containers (replicas) running it; None where the backend cannot count them (Modal).
    replicas: int | None
    #: Where the time of the latest cold start went (`ColdStart`'s fields and `at`), if one was seen.
    last_cold_start: dict[str, float] | None = None
    last_error: str | None = None
    #: In-process only.
    loads: LoadHistory | None = None
    #: Ray only: replicas by Serve's state (RUNNING, STARTING, STOPPING).
    replica_states: dict[str, int] | None = None
    #: Modal only.
    pool: PoolWindow | None = None
    #: The precision its model runs in and why it is not the registry's dtype (None: not reported —
    #: not loaded here yet, or a backend whose containers do not report it).
    dtype_in_use: str | None = None
    dtype_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's view: the fields every backend reports, then this backend's own, flattened."""
        out: dict[str, Any] = {"state": self.state.value, "replicas": self.replicas,
                               "last_cold_start": self.last_cold_start, "last_error": self.last_error}
        if self.loads is not None:
            out.update(asdict(self.loads))
        if self.replica_states is not None:
            out["replica_states"] = dict(self.replica_states)
        if self.pool is not None:
            out.update(asdict(self.pool))
        return out

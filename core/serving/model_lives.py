"""Each loaded model's life in the cost ledger, where a process is its experiments' container.

Why this module exists: in-process (and inside one Ray replica or Modal container) a model's load is
its container's cold start, its requests are busy time, and its eviction is the container's stop.
The cache and the engine report those moments here; this keeps the ledger's container ids (one per
load, so a reload after a registry change is a new container) out of both.
"""

from __future__ import annotations

import itertools
import threading
from types import TracebackType
from typing import Hashable

from core.keepwarm.ledger import CostLedger
from core.serving.after_answer import after_answer


class ModelLives:
    def __init__(self, ledger: CostLedger | None = None):
        self.ledger = ledger or CostLedger()
        self._lock = threading.Lock()
        self._ids: dict[Hashable, str] = {}  # a load under way (its future) or a loaded model (its experiment)
        self._count = itertools.count(1)

    def loading(self, load: Hashable, experiment_id: str) -> None:
        with self._lock:
            container = self._ids[load] = f"{experiment_id}#{next(self._count)}"
        self.ledger.started(experiment_id, container)

    def loaded(self, load: Hashable, experiment_id: str, kept: bool = True) -> None:
        """The load finished; `kept`: its model stays loaded (else it served its waiters and went)."""
        with self._lock:
            container = self._ids.pop(load, None)
            if container is not None and kept:
                self._ids[experiment_id] = container
        if container is not None:
            (self.ledger.ready if kept else self.ledger.stopped)(container)

    def ended(self, key: Hashable) -> None:
        """A load failed (`key`: its future) or a model was evicted (its experiment)."""
        with self._lock:
            container = self._ids.pop(key, None)
        if container is not None:
            self.ledger.stopped(container)

    def serving(self, experiment_id: str) -> "Serving":
        """A request runs on the experiment's loaded model (busy time), while the returned context is open."""
        with self._lock:
            container = self._ids.get(experiment_id)
        return Serving(self.ledger, container)

    def close(self) -> None:
        self.ledger.stop_all()


class Serving:
    """One request's busy time on a container of the ledger (a plain class: this is on every request's
    path, where a generator-based context costs several times as much)."""

    __slots__ = ("ledger", "container")

    def __init__(self, ledger: CostLedger, container: str | None):
        self.ledger = ledger
        self.container = container

    def __enter__(self) -> None:
        if self.container is not None:
            self.ledger.request_started(self.container)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.container is not None:  # its end, stamped now, counted after the answer went out
            after_answer(self.ledger.request_finished, self.container, self.ledger.now())

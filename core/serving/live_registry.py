"""The registry a running server serves from: changes arrive while it runs, without a restart.

Why this module exists: experiments are added, swapped to a new model and retired every day, and
restarting a server (or redeploying) to pick that up loses every warm container and all activity.
A `LiveRegistry` holds the current registry, polls its `RegistrySource` (a file, shared storage, a
keeper on another node — one cheap stamp per poll, a full read only when it moved) and tells its
listeners what changed: experiments added, removed, or changed — a new definition, or a moving
source (an MLflow alias) that now resolves to another model (core.serving.moving_sources). A source
that becomes unreadable or invalid never breaks what is served: the last good registry stays and
the error is reported. Its polls and background tasks are core.serving.registry_tasks'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from core.serving.moving_sources import MovingSources, moves, source_identity
from core.serving.registry import Experiment, Registry
from core.serving.registry_change import RegistryChange, registry_diff
from core.serving.registry_listeners import Listener, RegistryListeners
from core.serving.registry_sources import FileSource, RegistrySource, StaticSource, put_in_file
from core.serving.registry_tasks import RegistryTasks
from core.serving.serial_refresh import SerialRefresh
from core.serving.source_reader import SourceReader

#: Also importable from here, where the registry's followers have always found them.
__all__ = ["FileSource", "Listener", "LiveRegistry", "RegistryChange", "RegistrySource", "StaticSource", "moves",
           "put_in_file", "registry_diff", "source_identity"]

@dataclass(frozen=True)
class RegistryStatus:
    """How following the source goes: the last read's error, the last change, failed resolutions."""

    last_error: str | None
    last_change_at: float | None
    identity_errors: dict[str, str]


class LiveRegistry:
    """The registry as served, following its source; listeners hear of every change."""

    def __init__(self, source: RegistrySource, initial: Registry, stamp: Hashable = None, poll_s: float = 1.0,
                 identity: Callable[[Experiment], str | None] = source_identity, identity_poll_s: float = 30.0):
        self.source = source
        self.poll_s = poll_s
        self.identity_poll_s = identity_poll_s
        self.moving = MovingSources(identity)
        self._registry = initial
        self._reader = SourceReader(source, stamp)
        self._last_change_at: float | None = None
        self._listeners = RegistryListeners()
        self._refreshes = SerialRefresh(self._refresh)
        self._tasks = RegistryTasks()

    @classmethod
    def static(cls, registry: Registry) -> "LiveRegistry":
        return cls(StaticSource(registry), registry, stamp=0)

    @classmethod
    def from_file(cls, path: Path | None, poll_s: float = 1.0, identity_poll_s: float = 30.0) -> "LiveRegistry":
        """The registry of a file (None: the shipped demo registry), read now: a bad file fails here."""
        source = FileSource(path)
        stamp, registry = source.file.read()
        return cls(source, registry, stamp, poll_s=poll_s, identity_poll_s=identity_poll_s)

    @property
    def current(self) -> Registry:
        return self._registry

    def get(self, experiment_id: str) -> Experiment | None:
        return self._registry.get(experiment_id)

    def __iter__(self) -> Iterator[Experiment]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def first_id(self) -> str | None:
        return self._registry.first_id()

    def identity(self, experiment_id: str) -> str | None:
        """The model a moving source resolved to when last checked (None: never moves, or unknown yet)."""
        return self.moving.identity(experiment_id)

    @property
    def status(self) -> RegistryStatus:
        return RegistryStatus(self._reader.last_error, self._last_change_at, dict(self.moving.errors))

    def describe(self) -> dict[str, Any]:
        return {"experiments": len(self._registry), "last_error": self._reader.last_error,
                "last_change_at": self._last_change_at,
                "resolved": dict(self.moving.identities), "resolve_errors": dict(self.moving.errors),
                "skipped": dict(getattr(self.source, "skipped", None) or {})}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.subscribe(listener)

    async def put(self, experiment: Experiment) -> RegistryChange:
        """Write one experiment through the source, then serve it here at once. What the write changed
        in the source, not what this refresh saw: a poll may have applied the write first. A new
        moving source is resolved in the background (a tracking server may take long to answer, or
        never; a failure shows in `describe()["resolve_errors"]`)."""
        written = await self.source.put(experiment)
        change = await self.refresh(force=True)
        change = change if written is None else written
        if experiment.id in change.added and moves(experiment):
            self._tasks.spawn(self.check_identities([experiment.id]))
        return change

    async def remove(self, experiment_id: str) -> RegistryChange:
        """Remove one experiment through the source (the change says whether there was one), then
        stop serving it here at once."""
        if not await self.source.remove(experiment_id):
            return RegistryChange()
        await self.refresh(force=True)
        return RegistryChange(removed=(experiment_id,))

    async def refresh(self, force: bool = False) -> RegistryChange:
        """Read the source when its stamp moved (or `force`); apply and announce what changed."""
        return await self._refreshes(force)

    async def _refresh(self, force: bool) -> RegistryChange:
        registry = await self._reader.read_if_moved(force)
        if registry is None:
            return RegistryChange()
        change = registry_diff(self._registry, registry)
        self.moving.forget(change.removed + change.changed)
        return await self._apply(registry, change)

    async def refresh_shared(self) -> None:
        """A refresh begun after this call, shared with callers that arrive meanwhile: a flood of unknown ids costs one read."""
        await self._refreshes.shared()

    async def check_identities(self, ids: list[str] | None = None) -> RegistryChange:
        """Resolve moving sources again; one whose model moved is announced as changed."""
        moved = await self.moving.check([e for e in self._registry if ids is None or e.id in ids])
        if not moved:
            return RegistryChange()
        async with self._refreshes.lock:
            return await self._apply(self._registry, RegistryChange(changed=tuple(sorted(moved))))

    async def _apply(self, registry: Registry, change: RegistryChange) -> RegistryChange:
        self._registry = registry
        if change:
            self._last_change_at = time.time()
            await self._listeners.announce(change, registry)
        return change

    def start(self) -> None:
        """Poll the source, and — on their own slower clock, since a tracking server may take minutes
        to answer — the moving sources."""
        self._tasks.poll([("registry-watch", self.refresh, self.poll_s),
                          ("registry-resolve", self.check_identities, self.identity_poll_s)])

    async def close(self) -> None:
        await self._tasks.close()

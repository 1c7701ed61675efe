"""The registry a running server serves from: changes arrive while it runs, without a restart.

Why this module exists: experiments are added, swapped to a new model and retired every day, and
restarting a server (or redeploying) to pick that up loses every warm container and all activity.
A `LiveRegistry` holds the current registry, polls its `RegistrySource` (a file, shared storage, a
keeper on another node — one cheap stamp per poll, a full read only when it moved) and tells its
listeners what changed: experiments added, removed, or changed — a new definition, or a moving
source (an MLflow alias) that now resolves to another model. A source that becomes unreadable or
invalid never breaks what is served: the last good registry stays and the error is reported.
Resolving a moving source may hang on its server: it runs on threads of its own (never asyncio's
default pool, which the registry's own reads use), in the background of a change that adds one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable, Iterator, Protocol

from core.serving import mlflow_source
from core.serving.detached import DetachedCalls
from core.serving.registry import Experiment, Registry, RegistryError
from core.serving.registry_file import ReadOnlyRegistry, RegistryFile
from core.serving.scrub import reason

log = logging.getLogger("hybrid_serve.registry")

#: Resolutions of moving sources: a thread each, so a tracking server that hangs holds no pool.
RESOLUTIONS = DetachedCalls("resolve")


@dataclass(frozen=True)
class RegistryChange:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: A new definition (source, revision, task, ...) or a moving source resolving to another model.
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed)}


def registry_diff(before: Registry, after: Registry, moved: set[str] | frozenset[str] = frozenset()) -> RegistryChange:
    old = {e.id: e for e in before}
    new = {e.id: e for e in after}
    return RegistryChange(
        added=tuple(e for e in new if e not in old),
        removed=tuple(e for e in old if e not in new),
        changed=tuple(e for e in new if e in old and (old[e] != new[e] or e in moved)),
    )


class RegistrySource(Protocol):
    """Where a registry lives. `stamp` is cheap (polled); `read` returns the stamp with the registry."""

    #: What relative local sources of entries added live resolve against.
    base_dir: Path

    async def stamp(self) -> Hashable: ...

    async def read(self) -> tuple[Hashable, Registry]: ...

    async def put(self, experiment: Experiment) -> "RegistryChange | None":
        """Add or replace one experiment (ReadOnlyRegistry when this source cannot be changed); what
        the write changed in the source (added, changed or nothing), None when the source cannot tell."""

    async def remove(self, experiment_id: str) -> bool:
        """Remove one experiment; False when it was not registered."""

    # Optional: `skipped` (id → reason), entries a source left out because they do not validate
    # while serving the others; shown by `describe`.


class FileSource:
    """A registry file (see registry_file.py); its blocking calls run on a worker thread. `create`: a
    `put` may start a missing file (the CLI's first `add`); a server's source never does — a file
    that vanished under it is an error, not an empty registry that would retire every experiment."""

    def __init__(self, path: Path | None, create: bool = False):
        self.file = RegistryFile(path)
        self.base_dir = self.file.base_dir
        self.create = create

    async def stamp(self) -> Hashable:
        return await asyncio.to_thread(self.file.stamp)

    async def read(self) -> tuple[Hashable, Registry]:
        return await asyncio.to_thread(self.file.read)

    async def put(self, experiment: Experiment) -> RegistryChange:
        return await asyncio.to_thread(put_in_file, self.file, experiment, self.create)

    async def remove(self, experiment_id: str) -> bool:
        return await asyncio.to_thread(self.file.remove, experiment_id)


def put_in_file(file: RegistryFile, experiment: Experiment, create: bool = False) -> RegistryChange:
    """Add or replace one experiment in a registry file; what that changed in the file."""
    before, after = file.change(lambda r: r.with_experiment(experiment), create)
    return registry_diff(before, after)


class StaticSource:
    """A registry given in code (tests, embedding): it never changes, and refuses changes."""

    def __init__(self, registry: Registry, base_dir: Path = Path(".")):
        self.registry = registry
        self.base_dir = base_dir

    async def stamp(self) -> Hashable:
        return 0

    async def read(self) -> tuple[Hashable, Registry]:
        return 0, self.registry

    async def put(self, experiment: Experiment) -> RegistryChange:
        raise ReadOnlyRegistry("this server's registry was given at start-up and cannot be changed")

    async def remove(self, experiment_id: str) -> bool:
        raise ReadOnlyRegistry("this server's registry was given at start-up and cannot be changed")


def source_identity(experiment: Experiment) -> str | None:
    """What a moving source (an MLflow alias) resolves to now; None for sources that never move."""
    if not mlflow_source.is_mlflow_source(experiment.source):
        return None
    ref = mlflow_source.parse(experiment.source)
    return mlflow_source.resolve(ref).identity if ref.moves else None


def moves(experiment: Experiment) -> bool:
    return mlflow_source.is_mlflow_source(experiment.source) and mlflow_source.parse(experiment.source).moves


Listener = Callable[[RegistryChange, Registry], Awaitable[None]]


@dataclass
class _Status:
    last_error: str | None = None
    last_change_at: float | None = None
    identity_errors: dict[str, str] = field(default_factory=dict)


class LiveRegistry:
    def __init__(self, source: RegistrySource, initial: Registry, stamp: Hashable = None, poll_s: float = 1.0,
                 identity: Callable[[Experiment], str | None] = source_identity, identity_poll_s: float = 30.0):
        self.source = source
        self.poll_s = poll_s
        self.identity_poll_s = identity_poll_s
        self._identity = identity
        self._registry = initial
        self._stamp = stamp
        self._identities: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._shared = asyncio.Lock()
        self._refreshes = 0  # refreshes begun (one at a time, so they finish in that order)
        self._refreshed = 0  # the number of the last one finished
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.status = _Status()

    @classmethod
    def static(cls, registry: Registry) -> "LiveRegistry":
        return cls(StaticSource(registry), registry, stamp=0)

    @classmethod
    def from_file(cls, path: Path | None, poll_s: float = 1.0, identity_poll_s: float = 30.0) -> "LiveRegistry":
        """The registry of a file (None: the shipped demo registry), read now: a bad file fails here."""
        source = FileSource(path)
        stamp, registry = source.file.read()
        return cls(source, registry, stamp, poll_s=poll_s, identity_poll_s=identity_poll_s)

    # --- the registry as served ---------------------------------------------------------------------
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
        return self._identities.get(experiment_id)

    def describe(self) -> dict[str, Any]:
        return {"experiments": len(self._registry), "last_error": self.status.last_error,
                "last_change_at": self.status.last_change_at,
                "resolved": dict(self._identities), "resolve_errors": dict(self.status.identity_errors),
                "skipped": dict(getattr(self.source, "skipped", None) or {})}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # --- changes ----------------------------------------------------------------------------------
    async def put(self, experiment: Experiment) -> RegistryChange:
        """Write one experiment through the source, then serve it here at once. What the write changed
        in the source, not what this refresh saw: a poll may have applied the write first. A new
        moving source is resolved in the background (a tracking server may take long to answer, or
        never; a failure shows in `describe()["resolve_errors"]`)."""
        written = await self.source.put(experiment)
        change = await self.refresh(force=True)
        change = change if written is None else written
        if experiment.id in change.added and moves(experiment):
            task = asyncio.get_running_loop().create_task(self.check_identities([experiment.id]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
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
        async with self._lock:
            self._refreshes += 1
            try:
                return await self._refresh(force)
            finally:
                self._refreshed = self._refreshes

    async def _refresh(self, force: bool) -> RegistryChange:
        try:
            if not force and await self.source.stamp() == self._stamp:
                return RegistryChange()
            stamp, registry = await self.source.read()
        except RegistryError as exc:  # a bad edit: keep serving the last good registry
            if self.status.last_error != str(exc):
                log.warning("registry not reloaded, still serving the last good one: %s", exc)
            self.status.last_error = str(exc)
            return RegistryChange()
        except Exception as exc:  # unreachable storage, ...: the same, and retried next poll
            self.status.last_error = f"reading the registry failed: {type(exc).__name__}: {exc}"
            return RegistryChange()
        self.status.last_error = None
        self._stamp = stamp
        change = registry_diff(self._registry, registry)
        for experiment_id in change.removed + change.changed:
            self._identities.pop(experiment_id, None)
        return await self._apply(registry, change)

    async def refresh_shared(self) -> None:
        """A refresh that started after this call, shared: callers that arrive while one runs wait
        for the next and share it, so a flood of look-ups (unknown ids) costs one stamp read at a time."""
        arrived = self._refreshes
        async with self._shared:
            if self._refreshed > arrived:
                return  # one that began after we arrived has finished
            await self.refresh()

    async def check_identities(self, ids: list[str] | None = None) -> RegistryChange:
        """Resolve moving sources again; one whose model moved is announced as changed."""
        moved: set[str] = set()
        for experiment in [e for e in self._registry if ids is None or e.id in ids]:
            if not moves(experiment):
                continue
            try:
                identity = await RESOLUTIONS.acall(partial(self._identity, experiment))
            except Exception as exc:  # MLflow unreachable, alias deleted, ...: keep the model served
                self.status.identity_errors[experiment.id] = reason(exc)
                continue
            self.status.identity_errors.pop(experiment.id, None)
            if identity is None:
                continue
            known = self._identities.get(experiment.id)
            self._identities[experiment.id] = identity
            if known is not None and known != identity:
                log.info("%s: %s now resolves to %s (was %s)", experiment.id, experiment.source, identity, known)
                moved.add(experiment.id)
        if not moved:
            return RegistryChange()
        async with self._lock:
            return await self._apply(self._registry, RegistryChange(changed=tuple(sorted(moved))))

    async def _apply(self, registry: Registry, change: RegistryChange) -> RegistryChange:
        self._registry = registry
        if change:
            self.status.last_change_at = time.time()
            log.info("registry changed: %s", change.describe())
            for listener in self._listeners:
                try:
                    await listener(change, registry)
                except Exception:  # one listener's failure must not stop the others
                    log.exception("a registry listener failed")
        return change

    # --- polling ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Poll the source, and — on their own slower clock, since a tracking server may take minutes
        to answer — the moving sources."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._poll(self.refresh, self.poll_s), name="registry-watch"),
                           loop.create_task(self._poll(self.check_identities, self.identity_poll_s), name="registry-resolve")]

    @staticmethod
    async def _poll(step: Callable[[], Awaitable[Any]], every_s: float) -> None:
        while True:
            try:
                await step()
            except Exception:  # never let the watcher die: the next poll retries
                log.exception("registry poll failed")
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []

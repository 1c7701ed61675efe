"""Where a registry lives: the `RegistrySource` interface, a registry file, a registry given in code.

Why this module exists: a live registry follows its source and writes through it, whatever it is —
a file on this machine, a keeper actor next to the file (Ray), a shared Dict (Modal). The interface
(a cheap stamp to poll, a read, a put, a remove) and the two sources core itself provides are here;
the backends' sources implement the same interface.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Hashable, Protocol

from core.serving.registry import Experiment, Registry
from core.serving.registry_change import RegistryChange, registry_diff
from core.serving.registry_file import ReadOnlyRegistry, RegistryFile


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

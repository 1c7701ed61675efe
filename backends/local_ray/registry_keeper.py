"""The registry file of a Ray deployment, kept by a small actor on the node that has the file.

Why this module exists: on a cluster the ingress may run on another node than the one `hybrid-serve
serve` was started on, where the registry file (HYBRID_REGISTRY) lives. A `RegistryKeeper` actor,
pinned to the driver's node, reads and changes that file for everyone (one `stat` per poll of the
ingress; the admin API's changes go through it, under the same lock the CLI takes), and remembers
the experiments whose local model directories were shipped to the cluster at start, so their
replicas read the shipped copy. It lives as long as the driver: Ctrl-C takes it away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable

from core.serving.live_registry import RegistryChange, put_in_file
from core.serving.registry import Experiment, Registry
from core.serving.registry_file import RegistryFile

NAMESPACE = "hybrid-serve"


def keeper_name(app_name: str) -> str:
    return f"{app_name}-registry"


class RegistryKeeper:
    def __init__(self, path: str | None, shipped: dict[str, tuple[Experiment, Experiment]] | None = None):
        self.file = RegistryFile(Path(path) if path else None)
        #: id → (the experiment as registered, the same as replicas read it on the cluster).
        self.shipped = shipped or {}

    def base_dir(self) -> str:
        return str(self.file.base_dir)

    def stamp(self) -> Hashable:
        return self.file.stamp()

    def read(self) -> tuple[Hashable, Registry]:
        return self.file.read()

    def put(self, experiment: Experiment) -> RegistryChange:
        return put_in_file(self.file, experiment)  # never creates the file: a vanished one is an error

    def remove(self, experiment_id: str) -> bool:
        return self.file.remove(experiment_id)

    def for_replicas(self, experiment: Experiment) -> Experiment:
        """The experiment as its replicas must read it: the shipped copy of a local model directory,
        while the registered definition is the one that was shipped."""
        original, shipped = self.shipped.get(experiment.id, (None, None))
        return shipped if shipped is not None and original == experiment else experiment


class KeeperSource:
    """`RegistrySource` (core.serving.live_registry) over the keeper actor's handle."""

    def __init__(self, handle: Any, base_dir: Path):
        self.handle = handle
        self.base_dir = base_dir

    async def stamp(self) -> Hashable:
        return await self._call("stamp")

    async def read(self) -> tuple[Hashable, Registry]:
        return await self._call("read")

    async def put(self, experiment: Experiment) -> RegistryChange:
        return await self._call("put", experiment)

    async def remove(self, experiment_id: str) -> bool:
        return await self._call("remove", experiment_id)

    async def _call(self, method: str, *args: Any) -> Any:
        """The keeper's answer; its error as the keeper raised it (a refused change keeps its message)."""
        from ray.exceptions import RayTaskError

        try:
            return await getattr(self.handle, method).remote(*args)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None

"""Every deploy seeds the deployed registry (shared state) from the registry file, once.

Why this module exists: on Modal the containers serve the registry in the deployment's `modal.Dict`,
which operators also change live. A deploy must bring the file's experiments in (added or updated,
local model directories as shipped in the image) without undoing what was added live since: an
entry only in the Dict is kept and listed, to be removed explicitly
(`hybrid-serve experiments remove ID --modal`) if it should go.

Two ways deploy, and both seed: `hybrid-serve deploy` right after `modal deploy`, and — for a plain
`modal deploy backends/modal_backend/inference_api.py`, which runs no code of ours afterwards — the
deployment's own containers: `SeedingRegistrySource` seeds from the image's registry file before its
first read, unless `registry-seeded` already names this deployment (set by whichever seeded it
first), so a container started later never undoes a change made live since the deploy. (Containers
that start within the same second or two may both seed — the Dict has no compare-and-set — so a live
change made in those seconds right after a deploy can be overwritten by the file's entry: repeat it.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable

from backends.modal_backend.pools import entry_fields
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.state_store import REGISTRY_SEEDED, StateStore
from core.serving.registry import Registry

log = logging.getLogger("hybrid_serve.modal.registry_sync")


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: Entries of the shared registry the file does not hold (added live): kept.
    kept: list[str] = field(default_factory=list)

    def lines(self, dict_name: str) -> list[str]:
        out = [f"registry       shared state {dict_name}: {len(self.added)} added, {len(self.updated)} updated, "
               f"{len(self.unchanged)} unchanged"
               + (f" (added: {', '.join(self.added)})" if self.added else "")
               + (f" (updated: {', '.join(self.updated)})" if self.updated else "")]
        if self.kept:
            out.append(f"registry       kept {len(self.kept)} experiments added live: {', '.join(self.kept)}; "
                       "remove with hybrid-serve experiments remove ID --modal")
        return out


async def sync_registry(source: DictRegistrySource, shipped: Registry) -> SyncResult:
    """Put every entry of `shipped` (the registry as the containers read it) that differs from the
    shared registry; keep the shared registry's other entries."""
    _, current = await source.read()
    result = SyncResult()
    for experiment in shipped:
        known = current.get(experiment.id)
        if known is not None and entry_fields(known) == entry_fields(experiment) and experiment.id not in source.skipped:
            result.unchanged.append(experiment.id)
            continue
        await source.put(experiment)
        (result.updated if known is not None or experiment.id in source.skipped else result.added).append(experiment.id)
    result.kept = sorted({e.id for e in current if shipped.get(e.id) is None}
                         | {e for e in source.skipped if shipped.get(e) is None})
    return result


async def seed_once(source: DictRegistrySource, shipped: Registry, deployment: str,
                    again: bool = False) -> SyncResult | None:
    """Seed the shared registry from `shipped` unless this deployment was seeded already (None then;
    `again`: seed all the same — `hybrid-serve deploy`, which says what it changed)."""
    if not again and await source.store.get(REGISTRY_SEEDED) == deployment:
        return None
    result = await sync_registry(source, shipped)
    await source.store.put(REGISTRY_SEEDED, deployment)
    return result


class SeedingRegistrySource(DictRegistrySource):
    """The registry source of a deployment's containers: before its first read, the deployment's
    registry file (shipped in the image) is seeded into the shared registry — once per deployment."""

    def __init__(self, store: StateStore, base_dir: Path, shipped: Registry, deployment: str):
        super().__init__(store, base_dir)
        self._seed: tuple[Registry, str] | None = (shipped, deployment)

    async def stamp(self) -> Hashable:
        seed, self._seed = self._seed, None  # the seeding's own reads and writes pass straight through
        if seed is not None:
            try:
                result = await seed_once(self, *seed)
            except BaseException:
                self._seed = seed  # the next read tries again
                raise
            if result is not None:
                log.info("seeded the shared registry from this deployment's registry file: %s",
                         "; ".join(result.lines("the shared state")))
        return await super().stamp()


def dry_run_lines(shipped: Registry, dict_name: str) -> list[str]:
    ids = [e.id for e in shipped]
    return [f"registry       would put {len(ids)} experiments of the registry file into shared state {dict_name}"
            + (f": {', '.join(ids)}" if ids else "") + "; entries added live there are kept"]

"""`hybrid-serve deploy` seeds the deployed registry (shared state) from the registry file.

Why this module exists: on Modal the containers serve the registry in the deployment's `modal.Dict`,
which operators also change live. A deploy must bring the file's experiments in (added or updated,
local model directories as shipped in the image) without undoing what was added live since: an
entry only in the Dict is kept and listed, to be removed explicitly
(`hybrid-serve experiments remove ID --modal`) if it should go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.modal_backend.pools import entry_fields
from backends.modal_backend.registry_store import DictRegistrySource
from core.serving.registry import Registry


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


def dry_run_lines(shipped: Registry, dict_name: str) -> list[str]:
    ids = [e.id for e in shipped]
    return [f"registry       would put {len(ids)} experiments of the registry file into shared state {dict_name}"
            + (f": {', '.join(ids)}" if ids else "") + "; entries added live there are kept"]

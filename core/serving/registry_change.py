"""What changed between two registries: experiments added, removed, changed.

Why this module exists: every part that follows the registry — the live registry's listeners, a
write through a source, the CLI's report, the Modal reconciler — needs the same three-way answer
(and a moving source that now resolves to another model counts as changed), computed once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.serving.registry import Registry, model_entry


@dataclass(frozen=True)
class RegistryChange:
    """Experiments added, removed and changed by one change of a registry (empty: falsy)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: A new definition (source, revision, task, ...) or a moving source resolving to another model.
    changed: tuple[str, ...] = ()
    #: Only the warm schedule changed: the same model, served as before (the controller reads the new one).
    rescheduled: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.rescheduled)

    def describe(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed),
                "rescheduled": list(self.rescheduled)}


def registry_diff(before: Registry, after: Registry, moved: set[str] | frozenset[str] = frozenset()) -> RegistryChange:
    """What turned `before` into `after`; `moved`: experiments whose moving source resolves elsewhere now."""
    old = {e.id: e for e in before}
    new = {e.id: e for e in after}
    changed = tuple(e for e in new if e in old and (model_entry(old[e]) != model_entry(new[e]) or e in moved))
    return RegistryChange(
        added=tuple(e for e in new if e not in old),
        removed=tuple(e for e in old if e not in new),
        changed=changed,
        rescheduled=tuple(e for e in new if e in old and e not in changed and old[e].warm != new[e].warm),
    )

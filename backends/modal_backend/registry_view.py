"""The registry as the window reconciler last read it from the shared state.

Why this module exists: both of the reconciler's jobs ask the registry the same questions — is an
experiment still registered, retired, or an entry that does not validate (neither served nor retired,
left as it is) — and must get the same answers within a pass. One view, re-read at the start of each
pass only when the registry's stamp moved, answers them for both.
"""

from __future__ import annotations

from typing import Any

from backends.modal_backend.registry_store import DictRegistrySource
from core.serving.registry import Experiment, Registry


class RegistryView:
    """The deployment's registry, re-read from `source` only when its stamp moved."""

    def __init__(self, source: DictRegistrySource):
        self.source = source
        self.registry = Registry({})
        self._stamp: Any = None
        self._read = False

    async def refresh(self) -> None:
        """Read the registry if it changed (or was never read); a failed read raises: the pass fails."""
        stamp = await self.source.stamp()
        if not self._read or stamp != self._stamp:
            self._stamp, self.registry = await self.source.read()
            self._read = True

    def get(self, experiment_id: str) -> Experiment | None:
        return self.registry.get(experiment_id)

    def retired(self, experiment_ids: set[str]) -> set[str]:
        """Of these, the experiments no longer registered (an entry that fails validation is not retired)."""
        return {e for e in experiment_ids if self.registry.get(e) is None and e not in self.source.skipped}

    def invalid(self, experiment_id: str) -> bool:
        """The experiment's entry does not validate: not retired, left as it is."""
        return experiment_id in self.source.skipped and self.registry.get(experiment_id) is None

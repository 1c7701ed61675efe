"""Registry changes over the admin API: `PUT` / `DELETE /experiments/{id}`.

Why this module exists: serving a request and changing the registry are two jobs with two sets of
errors. A change over HTTP is checked exactly as the CLI checks it (core.serving.registration), is
never a path on the server's machine, and maps the registry's troubles to the status that fits:
invalid entry 422, unknown id 404, read-only registry 409, a registry that cannot be read or
written 503 with `Retry-After` (the last good registry is still served).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from core.serving.errors import (InvalidExperiment, RegistryReadOnly, RegistryUnavailable, UnknownExperiment)
from core.serving.live_registry import LiveRegistry, RegistryChange
from core.serving.registration import checked_entry
from core.serving.registry import Experiment, RegistryError
from core.serving.registry_file import ReadOnlyRegistry

#: Why the admin API refuses a local directory.
HTTP_LOCAL_DIR = ("a local directory is registered with `hybrid-serve experiments add` on the server's machine, "
                  "not over HTTP; over HTTP use a package:, Hugging Face or mlflow: source")
#: A registry that cannot be changed now is an operator's to mend: ask clients to come back after this long.
REGISTRY_RETRY_S = 30.0


class RegistryAdmin:
    def __init__(self, registry: LiveRegistry, current: Callable[[str], Awaitable[Experiment]]):
        self.registry = registry
        #: The experiment as the server knows it now (404 when unknown), also when added elsewhere a moment ago.
        self._current = current

    async def register(self, experiment_id: str, fields: dict[str, Any]) -> tuple[Experiment, RegistryChange]:
        """Add or replace an experiment, checked as the CLI checks it (registration.py). Over HTTP a
        source is never a path on this machine: a remote caller must not make the server read its files
        (an entry keeps the local source the operator registered, e.g. a model shipped with a deploy)."""
        try:
            experiment = await asyncio.to_thread(  # a pinned sha256 hashes the weights
                checked_entry, experiment_id, fields, self.registry.source.base_dir,
                self.registry.get(experiment_id), HTTP_LOCAL_DIR)
        except RegistryError as exc:
            raise InvalidExperiment(str(exc)) from None
        return experiment, await self._change(self.registry.put(experiment))

    async def retire(self, experiment_id: str) -> RegistryChange:
        await self._current(experiment_id)  # 404 when unknown
        change = await self._change(self.registry.remove(experiment_id))
        if not change.removed:  # gone from the source since this server last read it
            raise UnknownExperiment.named(experiment_id, (e.id for e in self.registry))
        return change

    async def _change(self, write: Awaitable[RegistryChange]) -> RegistryChange:
        """A registry write's outcome, or the error that fits: read-only (409), a registry that cannot
        be read or written (503; the last good registry is still served)."""
        try:
            return await write
        except ReadOnlyRegistry as exc:
            raise RegistryReadOnly(str(exc)) from None
        except RegistryError as exc:
            raise RegistryUnavailable(f"the registry was not changed: {exc}; still serving the last good registry "
                                      f"({len(self.registry)} experiments)", retry_after_s=REGISTRY_RETRY_S) from None

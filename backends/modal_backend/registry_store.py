"""The deployed app's registry in its shared `modal.Dict`: what ingresses, the reconciler and
`hybrid-serve experiments … --modal` read and change.

Why this module exists: on Modal an experiment added or changed must serve on its next request
without a deploy, so the registry lives in shared storage every container reads at run time, not in
the image. `DictRegistrySource` is core's `RegistrySource` over the Dict's `registry/<id>` keys and
its `registry-stamp` (see state_store.py for the keys and the write order). One entry that does not
validate (written by hand, by an older version) is skipped and reported in `skipped` — it never takes
the other experiments down with it, and an experiment this reader served before keeps its last good
definition until the entry is fixed or removed.

`modal_registry(settings)` is the entry point `hybrid_serve.registries: modal` that the CLI's
`--modal` flag uses: the Dict of the deployment named by the settings (MODAL_APP_NAME), reached with
the Modal tokens of the settings (environment or `.env`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Hashable

from backends.modal_backend.pools import definition_problem, entry_fields
from backends.modal_backend.settings import ModalSettings, modal_settings
from backends.modal_backend.state_store import REGISTRY, REGISTRY_STAMP, ModalDictStore, StateStore, registry_key
from core.serving.live_registry import RegistryChange
from core.serving.registry import Experiment, Registry, RegistryError, experiment_entry
from core.settings import Settings

log = logging.getLogger("hybrid_serve.modal.registry")


def new_stamp() -> str:
    """Unique per write (two writers in the same instant still differ)."""
    return f"{uuid.uuid4().hex}-{time.time():.6f}"


class DictRegistrySource:
    """`RegistrySource` over the shared state. `base_dir`: what relative local sources (the model
    directories shipped with the deploy, `./models/<id>`) resolve against — the folder of the registry
    file in the container."""

    def __init__(self, store: StateStore, base_dir: Path):
        self.store = store
        self.base_dir = base_dir
        #: Entries that did not validate at the last read, by id: the reason. One that validated at an
        #: earlier read keeps being served as it was then.
        self.skipped: dict[str, str] = {}
        self._last_good: dict[str, Experiment] = {}

    async def stamp(self) -> Hashable:
        return await self.store.get(REGISTRY_STAMP)

    async def read(self) -> tuple[Hashable, Registry]:
        stamp = await self.stamp()  # first: entries written before it are all seen below
        experiments: dict[str, Experiment] = {}
        skipped: dict[str, str] = {}
        for key in sorted(k for k in await self.store.keys() if isinstance(k, str) and k.startswith(REGISTRY)):
            experiment_id = key.removeprefix(REGISTRY)
            fields = await self.store.get(key)
            if fields is None:  # removed since the listing
                continue
            try:
                if not isinstance(fields, dict):
                    raise RegistryError(f"[experiments.{experiment_id}]: not a table of fields: {type(fields).__name__}")
                experiments[experiment_id] = experiment_entry(experiment_id, fields, self.base_dir, "shared registry: ")
            except RegistryError as exc:
                skipped[experiment_id] = str(exc)
                if experiment_id in self._last_good:  # a bad edit of a served experiment: keep serving it
                    experiments[experiment_id] = self._last_good[experiment_id]
        for experiment_id, reason in skipped.items():
            if self.skipped.get(experiment_id) != reason:
                log.warning("registry entry skipped, the other experiments serve on: %s", reason)
        self.skipped = skipped
        self._last_good = dict(experiments)
        return stamp, Registry(experiments)

    async def put(self, experiment: Experiment) -> RegistryChange:
        problem = definition_problem(experiment)
        if problem:
            raise RegistryError(problem)
        known, fields = await self.store.get(registry_key(experiment.id)), entry_fields(experiment)
        if known == fields:
            return RegistryChange()
        await self.store.put(registry_key(experiment.id), fields)
        await self.store.put(REGISTRY_STAMP, new_stamp())
        return RegistryChange(added=(experiment.id,)) if known is None else RegistryChange(changed=(experiment.id,))

    async def remove(self, experiment_id: str) -> bool:
        if await self.store.pop(registry_key(experiment_id)) is None:
            return False
        await self.store.put(REGISTRY_STAMP, new_stamp())
        return True


def modal_registry(settings: Settings) -> DictRegistrySource:
    """The deployed app's registry (entry point `hybrid_serve.registries: modal`). Nothing is sent
    to Modal until the first read or write."""
    modal = modal_settings(settings)
    return app_registry(modal, modal.modal_app_name)


def app_registry(settings: ModalSettings, app_name: str) -> DictRegistrySource:
    """The registry of the app `app_name` (`<app>-dev` for `deploy --dev`)."""
    import modal

    from backends.modal_backend.deploy_config import state_dict_name
    from core.auth import modal_client_environment

    for name, value in modal_client_environment(settings).items():  # tokens from .env reach the client too
        os.environ.setdefault(name, value)
    state: Any = modal.Dict.from_name(state_dict_name(app_name), create_if_missing=True)
    # Local sources cannot reach a deployed container (the CLI refuses them); shipped ones resolve there.
    return DictRegistrySource(ModalDictStore(state), Path("."))

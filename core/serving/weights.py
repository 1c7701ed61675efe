"""A model's weights file and its pinned sha256, checked before anything is deserialised.

Why this module exists: the registry may pin a weights file's sha256; the check runs where a model
is loaded and where an experiment is registered (a wrong pin is refused at once, not at the first
request), and must not need torch or transformers to run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.serving.errors import ModelUnavailable
from core.serving.registry import Experiment

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def weights_file(model_dir: Path) -> Path | None:
    return next((model_dir / n for n in WEIGHT_FILES if (model_dir / n).is_file()), None)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(experiment: Experiment, model_dir: Path) -> None:
    """Refuse the model when the registry pins a sha256 and the weights file does not match it."""
    if not experiment.sha256:
        return
    path = weights_file(model_dir)
    if path is None:
        raise ModelUnavailable(f"{experiment.id}: sha256 is pinned but no single weights file ({', '.join(WEIGHT_FILES)}) was found")
    actual = sha256_of(path)
    if actual != experiment.sha256:
        raise ModelUnavailable(
            f"{experiment.id}: weights file {path.name} has sha256 {actual}, the registry pins {experiment.sha256}; refused"
        )


def check_local_source(experiment: Experiment) -> None:
    """For a local or package source: the directory exists and holds a model whose weights match
    the pinned sha256 (sources on the Hub or in MLflow are checked when they load)."""
    if not experiment.is_local:
        return
    try:
        model_dir = experiment.local_path()
    except FileNotFoundError as exc:
        raise ModelUnavailable(f"{experiment.id}: source: {exc}") from None
    assert model_dir is not None
    if not model_dir.is_dir():
        raise ModelUnavailable(f"{experiment.id}: source: model directory {str(model_dir)!r} does not exist")
    if not (model_dir / "config.json").is_file():
        raise ModelUnavailable(f"{experiment.id}: source: {str(model_dir)!r} holds no config.json: not a transformers model")
    verify_weights(experiment, model_dir)

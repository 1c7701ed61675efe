"""Experiment registry: parsing, validation, source resolution, and the shipped demo entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.serving.weights import sha256_of, weights_file
from core.serving.registry import EXPERIMENT_ID_PATTERN, Registry, RegistryError, Task


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return path


def test_shipped_registry_serves_the_pinned_demo_model() -> None:
    registry = Registry.load()
    demo = registry.get("demo-embeddings")
    assert demo is not None and demo.task is Task.FEATURE_EXTRACTION
    model_dir = demo.local_path()
    assert model_dir is not None and model_dir.is_dir()
    assert sha256_of(weights_file(model_dir)) == demo.sha256  # type: ignore[arg-type]


def test_relative_local_source_resolves_against_the_registry_folder(tmp_path: Path) -> None:
    path = write(tmp_path, '[experiments.e1]\nsource = "./models/e1"\ntask = "text-classification"\n')
    experiment = Registry.load(path).get("e1")
    assert experiment is not None and experiment.local_path() == (tmp_path / "models" / "e1").resolve()


def test_hub_source_with_revision_has_no_local_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[experiments.h]\nsource = "org/model"\nrevision = "abc123"\ntask = "text-generation"\n')
    experiment = Registry.load(path).get("h")
    assert experiment is not None and experiment.local_path() is None and experiment.revision == "abc123"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[experiments."bad id!"]\nsource = "x/y"\ntask = "feature-extraction"\n', "id"),
        ('[experiments.e]\nsource = "x/y"\ntask = "translation"\n', "task"),
        ('[experiments.e]\ntask = "feature-extraction"\n', "source"),
        ('[experiments.e]\nsource = "x/y"\ntask = "feature-extraction"\nsha256 = "abc"\n', "sha256"),
        ('[experiments.e]\nsource = "x/y"\ntask = "feature-extraction"\ncolour = "red"\n', "colour"),
        ("[other]\n", "needs an [experiments] table"),
        ("not = [toml", "not valid TOML"),
    ],
)
def test_malformed_registry_names_file_entry_and_reason(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RegistryError) as err:
        Registry.load(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not found"):
        Registry.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("experiment_id", ["demo-embeddings", "A.b_c-9", "x" * 128])
def test_valid_ids(experiment_id: str) -> None:
    assert re.match(EXPERIMENT_ID_PATTERN, experiment_id)


@pytest.mark.parametrize("experiment_id", ["", "x" * 129, "../etc", "a/b", "sp ace", "é"])
def test_invalid_ids(experiment_id: str) -> None:
    assert not re.match(EXPERIMENT_ID_PATTERN, experiment_id)

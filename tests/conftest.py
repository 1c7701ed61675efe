"""Shared fixtures: every test starts from a clean environment and an empty working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTING_PREFIXES = ("MODAL_", "HYBRID_")


@pytest.fixture(autouse=True)
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No hybrid-serve variable leaks in from the developer's shell, and no stray `.env` is read."""
    for name in list(os.environ):
        if name.upper().startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real tiny models for each task, built offline once per session."""
    from tests.tiny_models import build_feature_extraction, build_text_classification, build_text_generation

    root = tmp_path_factory.mktemp("models")
    return {
        "feature-extraction": build_feature_extraction(root / "fe"),
        "text-classification": build_text_classification(root / "clf"),
        "text-generation": build_text_generation(root / "gen"),
    }


@pytest.fixture(scope="session")
def registry_file(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one experiment per task, plus experiments whose load must fail."""
    from core.models import sha256_of, weights_file

    fe = tiny_models["feature-extraction"]
    path = tmp_path_factory.mktemp("registry") / "experiments.toml"
    path.write_text(
        f"""
[experiments.fe]
source = "{fe}"
task = "feature-extraction"
sha256 = "{sha256_of(weights_file(fe))}"

[experiments.fe-2]
source = "{fe}"
task = "feature-extraction"

[experiments.fe-3]
source = "{fe}"
task = "feature-extraction"

[experiments.clf]
source = "{tiny_models['text-classification']}"
task = "text-classification"

[experiments.gen]
source = "{tiny_models['text-generation']}"
task = "text-generation"

[experiments.bad-sha]
source = "{fe}"
task = "feature-extraction"
sha256 = "{'0' * 64}"

[experiments.missing]
source = "./does-not-exist"
task = "feature-extraction"

[experiments.offline-hub]
source = "hybrid-serve-tests/no-such-model"
task = "feature-extraction"
"""
    )
    return path

"""A Modal model container loads its pool's definition with the registry's `dtype`: the definition
(the pool's parameter) carries it, and the container's model runs in it (run as the container runs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch


def test_the_container_of_a_bfloat16_pool_loads_its_model_in_bfloat16(tmp_path: Path, tiny_models: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.modal_backend.container import ModelContainer
    from backends.modal_backend.pools import PoolKey, pool_key
    from backends.modal_backend.settings import load_modal_settings
    from core.serving.parameters import FeatureExtractionParams
    from core.serving.registry import Registry
    from core.serving.remote import answered_prediction

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry_path = tmp_path / "experiments.toml"
    registry_path.write_text(f'[experiments.fe-bf16]\nsource = "{tiny_models["feature-extraction"]}"\n'
                             'task = "feature-extraction"\ndtype = "bfloat16"\n', encoding="utf-8")
    settings = load_modal_settings(env_file=None, registry_path=registry_path)
    key = pool_key(Registry.load(registry_path).get("fe-bf16"), None)  # type: ignore[arg-type]
    pool = PoolKey("fe-bf16", key.definition)  # as the container gets it: the id and the definition's text
    assert '"dtype":"bfloat16"' in pool.definition
    container = ModelContainer(settings, pool, commit_weights=lambda: None)
    container.load(on_cpu=True)  # a CPU memory snapshot's load
    model = container.worker.engine.cache.get(container.worker.experiment).model
    assert {p.dtype for p in model.module.parameters()} == {torch.bfloat16}
    answer = asyncio.run(container.worker.predict(["hello world"], FeatureExtractionParams(), None))
    assert len(answer["prediction"].outputs[0]) == 32, answer
    assert answer["precision"] == {"dtype_in_use": "bfloat16", "dtype_note": None}  # what the ingress shows
    assert answered_prediction(answer, 0.0).precision == {"dtype_in_use": "bfloat16", "dtype_note": None}
    status = asyncio.run(container.worker.engine.model_status())["fe-bf16"]
    assert (status.dtype_in_use, status.dtype_note) == ("bfloat16", None)

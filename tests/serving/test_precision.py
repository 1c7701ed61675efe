"""Per-experiment precision (`dtype`): validated in the registry, honoured on load with tiny real
models, decided again on another device, a float32 fallback that says why, and a change of dtype
that is a change of model (a swap locally, a new pool on Modal)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import torch

from core.serving.live_registry import LiveRegistry, RegistryChange, registry_diff
from core.serving.models import load_model
from core.serving.parameters import FeatureExtractionParams, TextClassificationParams, TextGenerationParams
from core.serving.precision import Precision, settle
from core.serving.registry import Dtype, Registry, RegistryError, experiment_entry
from core.serving.registry_file import RegistryFile

ALLOWED = "'float32', 'bfloat16' or 'float16'"
TEXTS = ["hello world", "a longer sentence for testing"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _experiment(tiny_models: dict[str, Path], task: str, dtype: str | None, experiment_id: str = "x"):  # type: ignore[no-untyped-def]
    fields = {"source": str(tiny_models[task]), "task": task, **({"dtype": dtype} if dtype else {})}
    return experiment_entry(experiment_id, fields, Path("."))


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters() if p.is_floating_point()}


# --- the registry entry -------------------------------------------------------------------------
def test_a_registry_file_with_an_unknown_dtype_is_refused_naming_the_field_and_the_allowed_values(tmp_path: Path) -> None:
    text = '[experiments.a]\nsource = "org/m"\ntask = "feature-extraction"\ndtype = "fp8"\n'
    with pytest.raises(RegistryError) as refused:
        Registry.parse(text, tmp_path, "experiments.toml")
    assert str(refused.value) == f"experiments.toml: [experiments.a]: dtype: Input should be {ALLOWED}"


def test_a_dtype_is_written_and_read_back_and_described(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    entry = experiment_entry("a", {"source": "org/m", "task": "text-generation", "dtype": "bfloat16"}, tmp_path)
    RegistryFile(path).change(lambda r: r.with_experiment(entry), create=True)
    assert 'dtype = "bfloat16"' in path.read_text()
    loaded = Registry.load(path).get("a")
    assert loaded is not None and loaded.dtype is Dtype.BFLOAT16
    assert loaded.describe()["dtype"] == "bfloat16"
    plain = experiment_entry("b", {"source": "org/m", "task": "text-generation"}, tmp_path)
    assert plain.dtype is None and plain.describe()["dtype"] is None and "dtype" not in Registry({"b": plain}).to_toml()


# --- loading --------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["feature-extraction", "text-classification", "text-generation"])
def test_each_task_loads_in_bfloat16_on_the_cpu_and_answers_in_the_right_shape(tiny_models: dict[str, Path],
                                                                               task: str) -> None:
    model = load_model(_experiment(tiny_models, task, "bfloat16"), "cpu")
    assert _dtypes(model.module) == {torch.bfloat16}
    assert model.precision == Precision(Dtype.BFLOAT16, "bfloat16", None)
    if task == "feature-extraction":
        vectors = model.predict(TEXTS, FeatureExtractionParams())
        assert len(vectors) == 2 and all(len(v) == 32 and all(type(x) is float for x in v) for v in vectors)
        assert all(abs(sum(x * x for x in v) - 1.0) < 0.02 for v in vectors)  # normalised, in float
    elif task == "text-classification":
        rows = model.predict(TEXTS, TextClassificationParams(top_k=2))
        assert [[s["label"] for s in row] for row in rows] != [] and all(len(row) == 2 for row in rows)
        assert all(abs(sum(s["score"] for s in row) - 1.0) < 1e-3 and all(type(s["score"]) is float for s in row)
                   for row in rows)
    else:
        outputs = model.predict(TEXTS, TextGenerationParams(max_new_tokens=3))
        assert len(outputs) == 2 and all(o["generated_text"].startswith(t) for o, t in zip(outputs, TEXTS))


def test_no_dtype_keeps_the_checkpoint_s_float32_and_float32_is_never_probed(tiny_models: dict[str, Path]) -> None:
    assert load_model(_experiment(tiny_models, "feature-extraction", None), "cpu").precision == Precision(None, "float32")
    calls: list[int] = []
    module = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert settle(module, Dtype.FLOAT32, "cpu", lambda: calls.append(1)) == Precision(Dtype.FLOAT32, "float32")
    assert calls == [] and _dtypes(module) == {torch.float32}


def test_float16_on_the_cpu_runs_as_the_probe_decides(tiny_models: dict[str, Path]) -> None:
    """float16 on a CPU: this torch either runs the model's layers in it or not; whichever, the
    loaded model says so and its weights are in the precision it claims."""
    model = load_model(_experiment(tiny_models, "text-classification", "float16"), "cpu")
    try:  # the same model's forward pass in float16, done by hand
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        raw = AutoModelForSequenceClassification.from_pretrained(tiny_models["text-classification"]).to(torch.float16)
        with torch.inference_mode():
            logits = raw(**AutoTokenizer.from_pretrained(tiny_models["text-classification"])(["hello world"],
                                                                                              return_tensors="pt")).logits
        runs = bool(torch.isfinite(logits.float()).all())
    except RuntimeError:
        runs = False
    if runs:
        assert model.precision == Precision(Dtype.FLOAT16, "float16", None)
        assert _dtypes(model.module) == {torch.float16}
    else:
        assert model.precision.in_use == "float32" and "float16 is not supported on cpu" in str(model.precision.note)
        assert _dtypes(model.module) == {torch.float32}
    rows = model.predict(TEXTS, TextClassificationParams(top_k=2))
    assert len(rows) == 2 and all(len(row) == 2 for row in rows)


def test_a_dtype_the_device_cannot_run_falls_back_to_float32_with_a_note_and_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    module = torch.nn.Linear(4, 2)

    def probe() -> None:
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'')

    with caplog.at_level(logging.WARNING, logger="hybrid_serve.serving.precision"):
        precision = settle(module, Dtype.FLOAT16, "cpu", probe, "exp-1")
    assert precision.in_use == "float32" and precision.fell_back
    assert precision.note == ("float16 is not supported on cpu here: running float32 (its test pass failed "
                              "(RuntimeError: \"addmm_impl_cpu_\" not implemented for 'Half'))")
    assert _dtypes(module) == {torch.float32}
    assert [r.getMessage() for r in caplog.records] == [f"exp-1: {precision.note}"]
    nan = settle(torch.nn.Linear(4, 2), Dtype.BFLOAT16, "cuda:0", lambda: [[float("nan")]])
    assert nan.note == "bfloat16 is not supported on cuda here: running float32 (its test pass gave non-finite values)"


def test_a_model_that_fell_back_tries_its_dtype_again_on_another_device(tiny_models: dict[str, Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A memory snapshot loads on the CPU, then moves to the GPU: there the registry's dtype is tried again."""
    import core.serving.precision as precision

    monkeypatch.setattr(precision, "finite", lambda value: False)  # this "CPU" cannot run bfloat16
    model = load_model(_experiment(tiny_models, "feature-extraction", "bfloat16"), "cpu")
    assert model.precision.in_use == "float32" and _dtypes(model.module) == {torch.float32}
    monkeypatch.undo()  # the new device can
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model.move_to("cpu")
    assert model.precision == Precision(Dtype.BFLOAT16, "bfloat16", None) and _dtypes(model.module) == {torch.bfloat16}
    assert len(model.predict(TEXTS, FeatureExtractionParams())[0]) == 32


# --- a change of dtype is a change of model --------------------------------------------------------
def test_a_dtype_change_is_a_model_change_for_the_live_registry_and_a_new_modal_pool(tmp_path: Path) -> None:
    from backends.modal_backend.pools import pool_key

    path = tmp_path / "experiments.toml"
    fields = {"source": "org/m", "task": "feature-extraction"}
    plain = experiment_entry("a", fields, tmp_path)
    half = experiment_entry("a", {**fields, "dtype": "bfloat16"}, tmp_path)
    assert registry_diff(Registry({"a": plain}), Registry({"a": half})) == RegistryChange(changed=("a",))
    RegistryFile(path).change(lambda r: r.with_experiment(plain), create=True)

    async def scenario() -> tuple[RegistryChange, RegistryChange, RegistryChange]:
        live = LiveRegistry.from_file(path, poll_s=3600)
        heard: list[RegistryChange] = []

        async def listener(change: RegistryChange, registry: Registry) -> None:
            heard.append(change)

        live.subscribe(listener)
        to_half = await live.put(half)
        again = await live.put(half)
        await live.close()
        return to_half, again, heard[0]

    to_half, again, heard = asyncio.run(scenario())
    assert to_half == RegistryChange(changed=("a",)) and heard == to_half and not again
    old, new = pool_key(plain, None), pool_key(half, None)
    assert old.definition != new.definition and new.entry["dtype"] == "bfloat16"
    assert new.experiment(tmp_path).dtype is Dtype.BFLOAT16  # what the pool's containers load
    assert new.serves(half) and not old.serves(half)

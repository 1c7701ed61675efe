"""hybrid-serve on Modal: per-experiment GPU pools whose scaledown windows follow their traffic.

    modal deploy backends/modal_backend/inference_api.py

Reads top to bottom: settings → image → storage → the per-experiment model class → the web ingress.
Every value below comes from the project's settings (`.env` / environment, see env_template.txt);
a bad value fails right here, before anything is sent to Modal. Importing this file makes no
network call.
"""


import modal

from backends.modal_backend.deploy_config import CACHE_DIR, REMOTE_REGISTRY, deploy_config
from core.auth import mode_line
from core.settings import load_settings

# --- settings: what to deploy ------------------------------------------------------------------------
settings = load_settings()
config = deploy_config(settings)
if modal.is_local():
    print(mode_line(settings))  # which credentials this deploy uses; never the credentials

app = modal.App(config.app_name)

# --- image: pinned packages, the project's code, the registry, non-secret settings -------------------
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*config.packages)
    .env(config.container_env)
    .add_local_file(config.registry_file, REMOTE_REGISTRY, copy=True)
    .add_local_python_source("core", "backends")
)

# --- storage: Hugging Face cache on a Volume (cold starts read weights from it), shared activity ----
weights = modal.Volume.from_name(config.volume_name, create_if_missing=True)
activity = modal.Dict.from_name(config.dict_name, create_if_missing=True)
ingress_secrets = [modal.Secret.from_name(config.api_token_secret)] if config.api_token_secret else []


# --- one container pool per experiment ----------------------------------------------------------------
@app.cls(image=image, volumes={CACHE_DIR: weights}, **config.model_options())
@modal.concurrent(max_inputs=config.concurrent_inputs)
class ExperimentModel:
    experiment_id: str = modal.parameter()

    @modal.enter(snap=config.memory_snapshot)
    def load(self) -> None:
        """Cold start: load this experiment's model (from the volume's cache after the first time)."""
        from core.serving.errors import UnknownExperiment
        from core.serving.registry import Registry
        from core.serving.worker import RemoteWorker

        experiment = Registry.load().get(self.experiment_id)
        if experiment is None:
            raise UnknownExperiment(f"experiment {self.experiment_id!r} is not registered")
        self.worker = RemoteWorker(load_settings(), experiment)
        self.worker.load()
        weights.commit()  # a first download lands on the volume for every later cold start

    @modal.method()
    async def predict(self, inputs: list[str], params: object) -> dict:
        return await self.worker.predict(inputs, params)


# --- the web ingress: the same HTTP API as locally -----------------------------------------------------
@app.function(image=image, secrets=ingress_secrets, scaledown_window=config.scaledown_window)
@modal.concurrent(max_inputs=1000)
@modal.asgi_app(requires_proxy_auth=config.proxy_auth)
def web():
    import os

    from backends.modal_backend.ingress import build_ingress_app
    from core.serving.registry import Registry

    async def call_model(experiment_id: str, inputs: list[str], params: object) -> dict:
        return await ExperimentModel(experiment_id=experiment_id).predict.remote.aio(inputs, params)

    async def update_autoscaler(experiment_id: str, window_s: int, min_containers: int | None = None) -> None:
        await ExperimentModel(experiment_id=experiment_id).update_autoscaler.aio(
            scaledown_window=window_s, min_containers=min_containers
        )

    return build_ingress_app(
        load_settings(), Registry.load(), call_model, update_autoscaler,
        store_get=activity.get.aio, store_put=activity.put.aio,
        deployment=os.environ.get("HYBRID_DEPLOYMENT", config.deployment),
    )

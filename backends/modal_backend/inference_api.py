"""hybrid-serve on Modal: per-experiment GPU pools whose scaledown windows follow their traffic.

    hybrid-serve deploy            # or: modal deploy backends/modal_backend/inference_api.py

Reads top to bottom: settings → images → storage → the per-experiment model class → the window
reconciler → the web ingress. The registry the containers serve lives in the shared Dict (seeded
from the registry file shipped with each deploy — by `hybrid-serve deploy`, or after a plain `modal deploy` by
the deployment's first container — changed live by `hybrid-serve experiments … --modal`
and the admin API); the file shipped in the image only locates the model directories shipped with it. Every value below comes from the project's settings (`.env` /
environment, see env_template.txt) and registry; a bad value fails right here, before anything is
sent to Modal. Importing this file makes no network call. Every argument of every Modal decorator
is spelled out, each with the reason it is there.
"""

import os
from pathlib import Path

import modal

from backends.modal_backend.deploy_config import (ANNOUNCED, CACHE_DIR, MODEL_CALL_TIMEOUT_S, PYTHON_VERSION,
                                                   REMOTE_REGISTRY, REMOTE_ROOT, TOKEN_KEY, TRAFFIC_DIR, deploy_config)
from backends.modal_backend.pools import PoolKey
from core.auth import modal_client_environment, mode_line
from core.http.static_files import STATIC as DASHBOARD_FILES
from core.prices import PRICE_TABLE
from core.serving.registry import Registry
from backends.modal_backend.settings import load_modal_settings

# --- settings: what to deploy ------------------------------------------------------------------------
settings = load_modal_settings()
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
    image = image.add_local_file(PRICE_TABLE, f"/root/core/{PRICE_TABLE.name}")  # data: not a Python source
    image = image.add_local_dir(DASHBOARD_FILES, "/root/core/http/static")  # the dashboard's page, script, style
    image = image.add_local_file(config.registry_file(), REMOTE_REGISTRY)
    for remote, local in config.registry.models.items() if models else ():
        image = image.add_local_dir(local, remote)
    return image


model_image = with_project(modal.Image.debian_slim(python_version=PYTHON_VERSION).pip_install(*config.model_packages), True)
ingress_image = with_project(modal.Image.debian_slim(python_version=PYTHON_VERSION).pip_install(*config.ingress_packages), False)

# --- storage: Hugging Face cache on a Volume (cold starts read weights from it), shared state ---------
weights = modal.Volume.from_name(config.volume_name, create_if_missing=True)
state = modal.Dict.from_name(config.dict_name, create_if_missing=True)
# The traffic recording (each request's time, status, duration, cold or warm; never inputs): the ingress
# writes it here, committed in the background, so it outlives every container (`GET /traffic` reads it).
traffic = modal.Volume.from_name(config.traffic_volume_name, create_if_missing=True)
# The bearer token's secret must hold the token: Modal refuses the deploy otherwise (never an open endpoint).
ingress_secrets = ([modal.Secret.from_name(config.auth.token_secret, required_keys=[TOKEN_KEY])]
                   if config.auth.token_secret else [])
# MLflow's tracking URI and credentials: a secret of every container that resolves or loads mlflow: sources.
mlflow_secrets = [modal.Secret.from_dict(config.mlflow_env)] if config.mlflow_env else []


# --- one container pool per experiment definition (pools.py) ------------------------------------------
@app.cls(
    image=model_image,  # the model stack and the project's code; no secret is ever baked into it
    volumes={CACHE_DIR: weights},  # downloaded weights outlive a container: the next cold start reads them here
    secrets=mlflow_secrets,  # MLflow's URI and credentials, for mlflow: sources (none when unset)
    gpu=config.gpu,  # MODAL_GPU (None: CPU only); an entry's own GPU comes from with_options in model_pool
    max_containers=config.max_containers,  # one pool's most until the reconciler applies its share of MODAL_MAX_CONTAINERS
    scaledown_window=config.scaledown_window,  # the idle window until the reconciler applies each pool's own
    enable_memory_snapshot=config.memory_snapshot,  # HYBRID_MEMORY_SNAPSHOT: restore a loaded model, not load it again
    experimental_options=config.experimental_options,  # GPU memory snapshots with HYBRID_GPU_SNAPSHOT, else none
    timeout=MODEL_CALL_TIMEOUT_S,  # a first call may download and load a large model: more than Modal's 300 s
)
@modal.concurrent(max_inputs=config.concurrent_inputs)  # MODAL_CONCURRENT_INPUTS: requests one container batches
class ExperimentModel:
    experiment_id: str = modal.parameter()
    #: The entry as this pool loads it (JSON; a moving source resolved): a changed model is a new pool.
    definition: str = modal.parameter()

    @modal.enter(snap=config.memory_snapshot)  # with a memory snapshot the load runs before it, and is restored
    def load(self) -> None:
        """Cold start: load this pool's model (on the CPU when a CPU memory snapshot follows)."""
        from backends.modal_backend.container import ModelContainer
        from backends.modal_backend.state_store import ModalDictStore

        pool = PoolKey(self.experiment_id, self.definition)
        self.container = ModelContainer(load_modal_settings(), pool, commit_weights=weights.commit,
                                        store=ModalDictStore(state))  # where it publishes its life (cost ledger)
        if not config.memory_snapshot:  # counted in MODAL_MAX_CONTAINERS from its start (with a snapshot: after restore)
            self.container.beat()
        self.container.load(on_cpu=config.memory_snapshot and not config.gpu_snapshot)

    @modal.enter(snap=False)  # after every start or restore: the one place a snapshot's container finds its GPU
    def restore(self) -> None:
        """After a memory snapshot's restore (a no-op without snapshots): weights to the GPU."""
        if config.memory_snapshot:
            self.container.restored()
        self.container.serving(restored=config.memory_snapshot)  # the cost ledger counts it from its start

    @modal.exit()  # the container stops (scaled down, redeployed): refuse what still waits, free the model
    async def close(self) -> None:
        """The container stops: the engine refuses queued requests (503), stops its batchers, releases the model."""
        container = getattr(self, "container", None)  # None: the load hook never ran
        if container is not None:
            await container.close()

    @modal.method()  # what the ingress calls (`predict.remote.aio`), answers and errors as values
    async def predict(self, inputs: list[str], params: object, request_at: float | None = None) -> dict:
        return await self.container.predict(inputs, params, request_at)

    @modal.method()  # a generator: the ingress reads a streamed generation with `stream.remote_gen.aio`
    async def stream(self, prompt: str, params: object, request_at: float | None = None):  # noqa: ANN201
        # the stream begins by naming this input's call: the ingress cancels it if its client leaves early
        async for item in self.container.stream(prompt, params, request_at, modal.current_function_call_id()):
            yield item


def model_pool(pool: PoolKey):  # noqa: ANN201  (a modal.Cls instance)
    """The pool of one experiment definition — on its own GPU type when the entry names one."""
    gpu = pool.gpu or config.gpu
    cls = ExperimentModel if gpu == config.gpu else ExperimentModel.with_options(gpu=gpu)
    return cls(experiment_id=pool.experiment_id, definition=pool.definition)


# --- the window reconciler: the one writer of every pool's autoscaler --------------------------------
@app.function(
    image=ingress_image,  # no model stack: the reconciler only reads activity and calls update_autoscaler
    schedule=modal.Period(seconds=config.reconcile_interval_s),  # HYBRID_RECONCILE_INTERVAL_S: at least this often
    max_containers=1,  # one writer of every pool's autoscaler, never two passes racing
    timeout=int(config.reconcile_interval_s) + 120,  # a pass may take longer than its period, never forever
    secrets=mlflow_secrets,  # resolving mlflow:…@ALIAS sources names the pools it reconciles
)
@modal.concurrent(max_inputs=32)  # pokes from requests join the one container instead of queueing behind a pass
async def reconcile_windows(poke: bool = False) -> None:
    from backends.modal_backend.reconciler import ReconcilerLoop, WindowReconciler
    from backends.modal_backend.registry_sync import SeedingRegistrySource
    from backends.modal_backend.state_store import ModalDictStore

    global _loop
    if _loop is None:
        async def update(pool: PoolKey, window_s: int, min_containers: int, max_containers: int | None) -> None:
            await model_pool(pool).update_autoscaler.aio(scaledown_window=window_s, min_containers=min_containers,
                                                         max_containers=max_containers)

        store = ModalDictStore(state)
        # windows only: no model is loaded here; a plain `modal deploy`'s registry is seeded by whichever runs first
        source = SeedingRegistrySource(store, Path(REMOTE_ROOT), config.registry.registry, config.deployment)
        reconciler = WindowReconciler(settings, source, store, update, config.deployment)
        _loop = ReconcilerLoop(reconciler, config.reconcile_interval_s, settings.window_update_interval_s)
    await (_loop.poke() if poke else _loop.tick())


_loop = None


# --- the web ingress: the same HTTP API as locally -----------------------------------------------------
@app.function(
    image=ingress_image,  # no model stack: the ingress forwards to the pools and needs neither torch nor a GPU
    secrets=ingress_secrets + mlflow_secrets,  # the bearer token's secret (when set) and MLflow's credentials
    scaledown_window=config.scaledown_window,  # the ingress stays up as long as a model pool would
    volumes={TRAFFIC_DIR: traffic},  # the traffic recording (HYBRID_TRAFFIC_DIR points here)
)
@modal.concurrent(max_inputs=1000)  # one ingress container carries many waiting requests (they await the pools)
@modal.asgi_app(requires_proxy_auth=config.auth.proxy_auth)  # proxy auth unless a bearer token or public endpoint
def web():
    from backends.modal_backend.fail_closed import missing_protection, refusing_app
    from backends.modal_backend.ingress import build_ingress_app
    from backends.modal_backend.state_store import ModalDictStore

    unprotected = missing_protection(settings.api_token_secret, settings.api_token is not None)
    if unprotected:  # a token secret was named but gave no token: refuse everything, never serve open
        return refusing_app(unprotected)

    async def call_model(pool: PoolKey, inputs: list[str], params: object, request_at: float) -> dict:
        return await model_pool(pool).predict.remote.aio(inputs, params, request_at)

    def stream_model(pool: PoolKey, prompt: str, params: object, request_at: float):  # noqa: ANN202
        return model_pool(pool).stream.remote_gen.aio(prompt, params, request_at)

    async def cancel_stream(call_id: str) -> None:  # closing a remote_gen stops only the reading
        await modal.FunctionCall.from_id(call_id).cancel.aio()

    async def poke() -> None:
        await reconcile_windows.spawn.aio(poke=True)

    # the deploy's registry file seeds the shared registry before the first read (a plain `modal deploy` too)
    return build_ingress_app(settings, call_model, ModalDictStore(state), poke,
                             seed=(config.registry.registry, config.deployment), stream_model=stream_model,
                             cancel_stream=cancel_stream)

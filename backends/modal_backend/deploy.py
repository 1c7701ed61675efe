"""`hybrid-serve deploy [--dry-run] [--dev]`: the deployment plan, checked, then Modal's own deploy.

Why this module exists: a deploy should fail here, with a message, rather than in a container an
hour later. The plan is everything short of the network — settings, authentication, windows, GPUs,
the two images' packages, and the container's file system laid out from the images' own upload
list and checked (the registry where the container reads it, every experiment's model reachable
in it). A real deploy then hands the tokens from the settings (environment or `.env`) to the Modal
client and runs `modal deploy` (or `modal serve` for `--dev`, under `<app>-dev` so its Dict and
Volume never mix with production's), and seeds the deployed registry from the registry file
(registry_sync.py: after the deploy — for `--dev`, whose serve runs until stopped, before it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from backends.modal_backend.deploy_config import (ANNOUNCED, MODAL_WEB_WAIT_S, PYTHON_VERSION, REMOTE_REGISTRY,
                                                   DeployError, ModalDeployConfig)
from backends.modal_backend.layout import in_layout, lay_out
from backends.modal_backend.registry_sync import dry_run_lines, seed_once
from backends.modal_backend.settings import ModalSettings, modal_settings
from core.auth import mode_line, modal_client_environment
from core.http.dashboard_routes import ASSETS
from core.prices import PRICE_TABLE
from core.serving.mlflow_source import is_mlflow_source
from core.serving.weights import weights_file
from core.serving.registry import PACKAGE_PREFIX, Registry, RegistryError
from core.settings import Settings, SettingsError

APP_MODULE = "backends.modal_backend.inference_api"


@dataclass(frozen=True)
class Plan:
    config: ModalDeployConfig
    lines: list[str]


#: The data files (no Python source: `add_local_python_source` would not ship them) every container reads.
DATA_FILES = (f"/root/core/{PRICE_TABLE.name}", *(f"/root/core/http/static/{name}" for name in ("dashboard.html", *ASSETS)))


def image_problems(root: Path, image: str) -> list[str]:
    """What any container of an image laid out at `root` would fail on: its packages, registry, data files."""
    problems = [f"the {image} has no {package}/ package" for package in ("core", "backends")
                if not (root / "root" / package / "__init__.py").is_file()]
    problems += [f"the {image} has no {path}" for path in DATA_FILES if not in_layout(root, path).is_file()]
    try:
        Registry.load(in_layout(root, REMOTE_REGISTRY))
    except RegistryError as exc:
        problems.append(f"the {image} cannot read its registry: {exc}")
    return problems


def container_problems(config: ModalDeployConfig, root: Path) -> list[str]:
    """What a model container laid out at `root` would fail on: its registry, its models' files."""
    problems = []
    registry_path = in_layout(root, REMOTE_REGISTRY)
    try:
        registry = Registry.load(registry_path)
    except RegistryError as exc:
        return [f"the container cannot read its registry: {exc}"]
    packages = {p.split("==")[0].replace("-", "_") for p in config.model_packages}
    for experiment in registry:
        if experiment.source.startswith(PACKAGE_PREFIX):
            package = experiment.source.removeprefix(PACKAGE_PREFIX).partition("/")[0]
            if package.replace("-", "_") not in packages:
                problems.append(f"{experiment.id}: package {package!r} is not in the model image")
        elif experiment.is_local:
            model_dir = experiment.local_path()
            if model_dir is None or weights_file(model_dir) is None:
                problems.append(f"{experiment.id}: no weights at {experiment.source} in the container")
    return problems + image_problems(root, "model image")


def make_plan(settings: ModalSettings, app_name: str | None = None) -> Plan:
    """Everything a deploy will do, checked offline. Raises DeployError / RegistryError."""
    if app_name:
        os.environ["MODAL_APP_NAME"] = app_name  # the app module reads its settings again
    os.environ.setdefault("HYBRID_DEPLOYMENT", uuid.uuid4().hex[:12])
    import importlib

    # the app module reads the settings when it is imported: read again if an earlier plan imported it
    api = importlib.reload(sys.modules[APP_MODULE]) if APP_MODULE in sys.modules else importlib.import_module(APP_MODULE)
    config: ModalDeployConfig = api.config
    with tempfile.TemporaryDirectory() as model_root, tempfile.TemporaryDirectory() as ingress_root:
        laid_out = lay_out(api.model_image, Path(model_root))  # ExperimentModel's containers
        ingress_files = lay_out(api.ingress_image, Path(ingress_root))  # web's and reconcile_windows' containers
        problems = container_problems(config, Path(model_root)) + image_problems(Path(ingress_root), "ingress image")
    if problems:
        raise DeployError("a container would fail:\n" + "\n".join(f"  - {p}" for p in problems))
    snapshot = ("GPU memory snapshot (weights restored on the GPU)" if config.gpu_snapshot else
                "CPU memory snapshot (weights load on the CPU, move to the GPU after restore)" if config.memory_snapshot
                else "off")
    wait = min(settings.cold_start_timeout_s, MODAL_WEB_WAIT_S)
    lines = [
        f"app            {config.app_name} (volume {config.volume_name}, shared state {config.dict_name}), "
        f"deployment {config.deployment}",
        f"authentication {config.auth.describe()}",
        f"windows        policy {settings.policy_name}: base {settings.base_warm_time}s, +{settings.extension_time}s "
        f"after a request within {settings.activity_window}s",
        f"containers     at most {settings.max_containers} across experiments (MODAL_MAX_CONTAINERS), "
        f"{settings.experiment_max_containers} for one (HYBRID_MAX_CONTAINERS_PER_EXPERIMENT)",
        f"reconciler     every {config.reconcile_interval_s:g}s and after requests (at most every "
        f"{settings.window_update_interval_s:g}s); pre-warms start {settings.prewarm_lead_s:g}s early",
        f"cold starts    a request waits up to {wait:g}s, then 503 + Retry-After (Modal ends web requests at 150s); "
        f"snapshots {snapshot}",
        f"model image    python {PYTHON_VERSION}, {len(config.model_packages)} packages: {' '.join(config.model_packages)}",
        f"ingress image  python {PYTHON_VERSION}, {len(config.ingress_packages)} packages (no torch): {' '.join(config.ingress_packages)}",
        f"container      {len(laid_out)} files uploaded; registry at {REMOTE_REGISTRY}: readable, every model reachable",
        f"ingress        {len(ingress_files)} files uploaded (web ingress, reconciler): code, registry, price table "
        "and dashboard files in place",
    ]
    if config.mlflow_env:
        lines.append(f"mlflow         {', '.join(sorted(config.mlflow_env))} in a modal.Secret of the containers "
                     "(never the image)")
    elif any(is_mlflow_source(e.source) for e in config.registry.registry):
        raise DeployError("the registry has mlflow: sources but MLFLOW_TRACKING_URI is not set here (environment or "
                          ".env): the containers would not find the tracking server")
    for experiment in config.registry.registry:
        where = "shipped with the image" if experiment.source.startswith("./") else (
            "from its Python package" if experiment.source.startswith(PACKAGE_PREFIX) else
            "from MLflow on its first cold start, then from the volume" if is_mlflow_source(experiment.source) else
            "from the Hugging Face Hub on its first cold start, then from the volume")
        lines.append(f"experiment     {experiment.id}: {experiment.task.value} on GPU {config.gpu_of(experiment) or 'none (CPU)'}, "
                     f"model {where}")
    return Plan(config, lines)


def credentials(settings: ModalSettings) -> str | None:
    """Which credentials the deploy would use, in words (never the credentials themselves); None: none."""
    if settings.modal_token_id is not None:
        return "Modal token ID and secret from the settings (environment or .env): production mode"
    from modal import config as modal_config

    if modal_config.config.get("token_id", use_env=False):  # what `modal setup` wrote
        return f"the active profile of {modal_config.user_config_path} (written by `modal setup`): development mode"
    return None


NO_CREDENTIALS = ("no Modal credentials: run `modal setup` (development mode: a browser login), or set "
                  "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET in the environment or .env (production mode)")


def seed_registry(settings: ModalSettings, config: ModalDeployConfig) -> bool:
    """Put the registry file's experiments into the deployed registry; print what changed and kept."""
    from backends.modal_backend.registry_store import app_registry

    try:
        result = asyncio.run(seed_once(app_registry(settings, config.app_name), config.registry.registry,
                                       config.deployment, again=True))
    except Exception as exc:  # the app is deployed; its registry is not up to date
        print(f"error: seeding the deployed registry failed ({type(exc).__name__}: {exc}); the app serves its "
              "previous registry: run hybrid-serve deploy again", file=sys.stderr)
        return False
    for line in result.lines(config.dict_name):
        print(f"  {line}")
    return True


def main(settings: Settings, dry_run: bool, dev: bool) -> int:
    """The `deploy` command: 0 on success, 2 when the plan is refused, Modal's own status otherwise."""
    try:
        settings = modal_settings(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(mode_line(settings))
    os.environ[ANNOUNCED] = "1"
    app_name = f"{settings.modal_app_name}-dev" if dev else None
    try:
        plan = make_plan(settings, app_name)
    except (DeployError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(("deployment plan (dry run: nothing was sent to Modal)" if dry_run else "deployment plan") + ":")
    for line in plan.lines:
        print(f"  {line}")
    if dry_run:
        for line in dry_run_lines(plan.config.registry.registry, plan.config.dict_name):
            print(f"  {line}")
    who = credentials(settings)
    print(f"  credentials    {who or 'none'}")
    if who is None:  # the deploy would fail on Modal's "Token missing": say so now, the dry run too
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
        return 2
    if dry_run:
        return 0
    env = {**os.environ, **modal_client_environment(settings), "HYBRID_DEPLOYMENT": plan.config.deployment}
    if app_name:
        env["MODAL_APP_NAME"] = app_name
    if dev and not seed_registry(settings, plan.config):
        return 1
    command = "serve" if dev else "deploy"
    status = subprocess.run([sys.executable, "-m", "modal", command, "-m", APP_MODULE], env=env).returncode
    if status == 0 and not dev and not seed_registry(settings, plan.config):
        return 1
    return status

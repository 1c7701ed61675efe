"""The Modal app file and its deployment plan, offline: settings-fed decorators, the two images'
packages, secure-by-default authentication, tokens from `.env`, and `hybrid-serve deploy --dry-run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import backends.modal_backend.deploy_config as deploy_config_module
from backends.modal_backend.deploy_config import (INGRESS_PACKAGES, MODEL_PACKAGES, DeployError, authentication, deploy_config,
                                                  pinned)
from backends.modal_backend.settings import load_modal_settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.long  # scheduled early (tests/conftest.py)

TOKEN_ID, TOKEN_SECRET = "ak-M0dalT0kenIdXyZ987", "as-M0dalT0kenSecretQwE654"
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
import json
import backends.modal_backend.inference_api as api
from modal.config import config
from modal._utils.async_utils import synchronizer
spec = lambda f: synchronizer._translate_in(f)._spec
def required_keys(secret):  # what modal's server is asked to assert when it resolves the secret at deploy
    load = synchronizer._translate_in(secret)._load
    return dict(zip(load.__code__.co_freevars, [c.cell_contents for c in load.__closure__ or ()])).get("required_keys")
secrets = {"web": len(spec(api.web).secrets), "reconciler": len(spec(api.reconcile_windows).secrets),
           "model": len(synchronizer._translate_in(api.ExperimentModel)._class_service_function._spec.secrets)}
print(json.dumps({"secrets": secrets, "options": api.config.model_options(), "concurrent": api.config.concurrent_inputs,
                  "auth": [api.config.auth.proxy_auth, api.config.auth.token_secret], "env": api.config.container_env,
                  "model_packages": api.config.model_packages, "ingress_packages": api.config.ingress_packages,
                  "app": api.app.name, "client_token": config.get("token_id"),
                  "ingress_secret_keys": [required_keys(s) for s in api.ingress_secrets]}))
"""


def import_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import inference_api.py in a fresh interpreter whose sockets refuse to connect."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    full.update(env, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=120)


def test_importing_the_app_makes_no_network_call_and_prints_the_mode(tmp_path: Path) -> None:
    proc = import_app(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "🔧 Development mode: Using web authentication"
    assert json.loads(proc.stdout.splitlines()[1])["app"] == "hybrid-serve"


def test_decorator_arguments_come_from_the_settings(tmp_path: Path) -> None:
    proc = import_app(
        tmp_path, MODAL_GPU="A10G", MODAL_MAX_CONTAINERS="3", MODAL_BASE_WARM_TIME="120", MODAL_CONCURRENT_INPUTS="4",
        HYBRID_MEMORY_SNAPSHOT="true", HYBRID_GPU_SNAPSHOT="true", HYBRID_PROXY_AUTH="true", MODAL_APP_NAME="exp-serving",
        MODAL_TOKEN_ID=TOKEN_ID, MODAL_TOKEN_SECRET=TOKEN_SECRET,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "🚀 Production mode: Using Modal token ID and secret"
    out = json.loads(proc.stdout.splitlines()[1])
    assert out["options"] == {"gpu": "A10G", "max_containers": 3, "scaledown_window": 120, "enable_memory_snapshot": True,
                              "timeout": 600, "experimental_options": {"enable_gpu_snapshot": True}}
    assert (out["concurrent"], out["auth"], out["app"]) == (4, [True, None], "exp-serving")
    assert out["env"]["MODAL_BASE_WARM_TIME"] == "120" and out["env"]["HYBRID_REGISTRY"] == "/root/hybrid-serve/experiments.toml"
    for secret in (TOKEN_ID, TOKEN_SECRET):  # tokens never reach the image
        assert secret[4:12] not in json.dumps(out["env"])


def test_a_token_secret_without_the_token_fails_the_deploy(tmp_path: Path) -> None:
    """Naming a token secret turns proxy auth off: Modal must refuse a secret that lacks the key
    (required_keys, asserted by its server at deploy), never deploy an open endpoint."""
    proc = import_app(tmp_path, HYBRID_API_TOKEN_SECRET="hybrid-serve-api")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[1])
    assert out["auth"] == [False, "hybrid-serve-api"] and out["secrets"]["web"] == 1
    assert out["ingress_secret_keys"] == [["HYBRID_API_TOKEN"]]
    assert json.loads(import_app(tmp_path).stdout.splitlines()[1])["ingress_secret_keys"] == []


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("MODAL_BASE_WARM_TIME", "1", "2..3600"),
    ("MODAL_MAX_CONTAINERS", "0", "≥ 1"),
    ("MODAL_EXTENSION_TIME", "3599", "≤ 3600"),
])
def test_out_of_range_settings_fail_at_import(tmp_path: Path, variable: str, value: str, allowed: str) -> None:
    proc = import_app(tmp_path, **{variable: value})
    assert proc.returncode != 0
    assert "SettingsError" in proc.stderr and variable in proc.stderr and allowed in proc.stderr


def test_mlflow_settings_are_a_secret_of_every_container_that_resolves_or_loads_models(tmp_path: Path) -> None:
    plain = json.loads(import_app(tmp_path).stdout.splitlines()[1])
    assert plain["secrets"] == {"web": 0, "reconciler": 0, "model": 0}
    proc = import_app(tmp_path, MLFLOW_TRACKING_URI="https://tracking.example", MLFLOW_TRACKING_TOKEN="tok-Zq81xT")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[1])
    assert out["secrets"] == {"web": 1, "reconciler": 1, "model": 1}
    assert "Zq81xT" not in json.dumps(out["env"]) and not any(k.startswith("MLFLOW_TRACKING") for k in out["env"])


def test_tokens_in_dotenv_reach_the_modal_client(tmp_path: Path) -> None:
    """The Modal client reads only the environment and ~/.modal.toml: the app hands it the tokens the
    settings took from `.env`, so "Production mode" is what the deploy really uses."""
    (tmp_path / ".env").write_text(f"MODAL_TOKEN_ID={TOKEN_ID}\nMODAL_TOKEN_SECRET={TOKEN_SECRET}\n")
    proc = import_app(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "🚀 Production mode: Using Modal token ID and secret"
    assert json.loads(proc.stdout.splitlines()[1])["client_token"] == TOKEN_ID


def test_cpu_only_deploy() -> None:
    config = deploy_config(load_modal_settings(env_file=None, modal_gpu="none"))
    assert config.model_options()["gpu"] is None and config.container_env["MODAL_GPU"] == "none"


# --- packages --------------------------------------------------------------------------------------------
def test_pins_drop_local_version_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's torch is `2.13.0+cpu`: PyPI has no such wheel, and a GPU container needs the CUDA build."""
    monkeypatch.setattr(deploy_config_module, "version", lambda package: {"torch": "2.13.0+cpu"}.get(package, "1.0"))
    assert pinned(("torch", "numpy")) == ["torch==2.13.0", "numpy==1.0"]


def test_the_ingress_image_is_light_and_no_image_carries_the_simulator() -> None:
    config = deploy_config(load_modal_settings(env_file=None))
    names = {p.split("==")[0] for p in config.ingress_packages}
    assert not names & {"torch", "transformers", "tokenizers", "safetensors"}
    for packages in (config.model_packages, config.ingress_packages):
        assert not {p.split("==")[0] for p in packages} & {"matplotlib", "rich", "typer", "ray", "modal"}
        assert all("==" in p and "+" not in p for p in packages)
    # the web-only packages (the HTTP API, metrics, the docs pages' files) are the ingress's alone
    assert set(INGRESS_PACKAGES) - {"fastapi", "prometheus-client", "fastapi-offline"} <= set(MODEL_PACKAGES)


#: What pip prints when the package index cannot be reached at all (no network), as opposed to a failed resolution.
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
               "Network is unreachable", "Could not fetch URL", "ConnectTimeout", "ReadTimeoutError")


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """Both images' resolutions, started at once (each waits on the package index part of the time; alone,
    both took 39 s together, 43 s + 28 s one after the other in a full run): image → (pip, the folder of
    its report.json and stderr.txt)."""
    config = deploy_config(load_modal_settings(env_file=None))
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in range(5, 40)] + [
        "--platform=manylinux2014_x86_64", "--platform=manylinux2010_x86_64", "--platform=manylinux1_x86_64",
        "--platform=linux_x86_64", "--platform=any"]
    started = {}
    for image, packages in (("model", config.model_packages), ("ingress", config.ingress_packages)):
        root = tmp_path_factory.mktemp(f"resolve-{image}")
        with (root / "stderr.txt").open("w") as stderr:  # a file, not a pipe: nothing blocks pip while a test waits
            started[image] = (subprocess.Popen(
                [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
                 "--python-version=3.11", "--implementation=cp", f"--target={root / 'target'}",
                 f"--report={root / 'report.json'}", "--quiet", "--disable-pip-version-check", "--retries=1", "--timeout=30",
                 *platforms, *packages],
                stdout=subprocess.DEVNULL, stderr=stderr, cwd=root), root)
    yield started
    for proc, _ in started.values():
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("image", ["model", "ingress"])
def test_each_image_resolves_for_a_linux_gpu_machine(
        image: str, resolutions: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> None:
    """What Modal's builder will do, short of downloading: resolve each image's pinned packages with
    their dependencies for Linux x86-64 / CPython 3.11 from the public package index (pip --isolated:
    no machine-local wheels or index settings). The model image's torch must be the CUDA build; the
    ingress image carries no torch. Skipped — saying so — only when the index cannot be reached at all."""
    proc, folder = resolutions[image]
    proc.wait(timeout=600)
    stderr, report = (folder / "stderr.txt").read_text(), folder / "report.json"
    if proc.returncode != 0 and any(marker in stderr for marker in UNREACHABLE):
        pytest.skip(f"the public package index cannot be reached from here: {stderr.strip().splitlines()[-1][:200]}")
    assert proc.returncode == 0, stderr[-3000:]
    installed = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]
                 for i in json.loads(report.read_text())["install"]}
    assert "matplotlib" not in installed
    if image == "ingress":
        assert "torch" not in installed and "transformers" not in installed
        assert {"fastapi", "prometheus-client", "fastapi-offline", "starlette"} <= set(installed)
        return
    torch = installed["torch"]
    assert "+" not in torch["version"]
    assert any(r.startswith("nvidia-") and "Linux" in r for r in torch.get("requires_dist", []))
    assert any(name.startswith("nvidia-") for name in installed)  # the CUDA libraries come with it


# --- authentication ---------------------------------------------------------------------------------------
def test_a_deploy_is_protected_by_default() -> None:
    auth = authentication(load_modal_settings(env_file=None))
    assert (auth.proxy_auth, auth.token_secret, auth.public) == (True, None, False)
    bearer = authentication(load_modal_settings(env_file=None, api_token_secret="hybrid-serve-api"))
    assert (bearer.proxy_auth, bearer.token_secret) == (False, "hybrid-serve-api")
    public = authentication(load_modal_settings(env_file=None, public_endpoint=True))
    assert (public.proxy_auth, public.token_secret, public.public) == (False, None, True)
    assert "PUBLIC" in public.describe()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"api_token": "s3cret"}, "modal secret create"),  # set here, but nothing would carry it to the deployment
    ({"public_endpoint": True, "proxy_auth": True}, "contradicts"),
])
def test_authentication_that_would_not_hold_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(DeployError, match=message):
        authentication(load_modal_settings(env_file=None, **overrides))


# --- hybrid-serve deploy --dry-run ---------------------------------------------------------------------------
def deploy_dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    full.update(env, HOME=str(tmp_path))  # no ~/.modal.toml: no credentials at all
    exe = Path(sys.executable).parent / "hybrid-serve"
    return subprocess.run([str(exe), "deploy", "--dry-run"], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=180)


def test_deploy_dry_run_prints_the_whole_plan_and_fails_without_credentials(tmp_path: Path) -> None:
    """The real deploy would fail on modal's "Token missing": the dry run prints the whole plan, says
    there are no credentials and exits non-zero."""
    proc = deploy_dry_run(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "credentials    none" in proc.stdout and "run `modal setup`" in proc.stderr and "MODAL_TOKEN_ID" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "🔧 Development mode: Using web authentication" and lines.count(lines[0]) == 1
    text = proc.stdout
    assert "dry run: nothing was sent to Modal" in text
    assert "authentication Modal proxy auth" in text
    assert "registry at /root/hybrid-serve/experiments.toml: readable, every model reachable" in text
    assert "demo-embeddings: feature-extraction on GPU T4, model from its Python package" in text
    assert "torch==2.13.0 " in text and "+cpu" not in text
    assert "a request waits up to 140s, then 503 + Retry-After" in text
    assert ("registry       would put 1 experiments of the registry file into shared state hybrid-serve-state: "
            "demo-embeddings; entries added live there are kept") in text


def test_deploy_dry_run_names_the_credentials_the_deploy_would_use(tmp_path: Path) -> None:
    production = deploy_dry_run(tmp_path, MODAL_TOKEN_ID=TOKEN_ID, MODAL_TOKEN_SECRET=TOKEN_SECRET)
    assert production.returncode == 0, production.stderr
    assert "credentials    Modal token ID and secret from the settings (environment or .env): production mode" in production.stdout
    assert TOKEN_ID[4:12] not in production.stdout and TOKEN_SECRET[4:12] not in production.stdout
    (tmp_path / ".modal.toml").write_text(f'[default]\ntoken_id = "{TOKEN_ID}"\ntoken_secret = "{TOKEN_SECRET}"\nactive = true\n')
    development = deploy_dry_run(tmp_path)  # what `modal setup` writes, in HOME
    assert development.returncode == 0, development.stderr
    assert ".modal.toml (written by `modal setup`): development mode" in development.stdout
    assert development.stdout.splitlines()[0] == "🔧 Development mode: Using web authentication"
    assert TOKEN_ID[4:12] not in development.stdout


def test_deploy_dry_run_refuses_a_registry_whose_models_cannot_reach_the_container(tmp_path: Path) -> None:
    registry = tmp_path / "experiments.toml"
    registry.write_text('[experiments.gone]\nsource = "./nowhere"\ntask = "feature-extraction"\n')
    proc = deploy_dry_run(tmp_path, HYBRID_REGISTRY=str(registry))
    assert proc.returncode == 2 and "gone" in proc.stderr and "cannot be shipped" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_plan_lays_out_both_images_and_names_a_file_a_container_would_miss(tmp_path: Path) -> None:
    """Every function's upload is checked: the model image (ExperimentModel) and the ingress image
    (web, reconcile_windows) — code, registry and the data files no Python-source upload would ship."""
    import backends.modal_backend.inference_api as api
    from backends.modal_backend.deploy import DATA_FILES, image_problems
    from backends.modal_backend.layout import lay_out

    for image, name in ((api.model_image, "model"), (api.ingress_image, "ingress")):
        root = tmp_path / name
        lay_out(image, root)
        assert image_problems(root, f"{name} image") == [], name
        for path in DATA_FILES:
            assert (root / path.lstrip("/")).is_file(), (name, path)
    (tmp_path / "ingress" / "root/core/http/static/dashboard.js").unlink()
    (tmp_path / "ingress" / "root/hybrid-serve/experiments.toml").write_text("[experiments.x]\ntask = 3\n")
    problems = image_problems(tmp_path / "ingress", "ingress image")
    assert problems[0] == "the ingress image has no /root/core/http/static/dashboard.js"
    assert problems[1].startswith("the ingress image cannot read its registry")
    proc = deploy_dry_run(tmp_path, MODAL_TOKEN_ID=TOKEN_ID, MODAL_TOKEN_SECRET=TOKEN_SECRET)
    assert "price table and dashboard files in place" in proc.stdout, proc.stdout


def test_the_dev_loop_has_its_own_state_and_weights(tmp_path: Path) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    exe = Path(sys.executable).parent / "hybrid-serve"
    (tmp_path / ".modal.toml").write_text(f'[default]\ntoken_id = "{TOKEN_ID}"\ntoken_secret = "{TOKEN_SECRET}"\n')
    proc = subprocess.run([str(exe), "deploy", "--dry-run", "--dev"], capture_output=True, text=True,
                          env={**full, "HOME": str(tmp_path)}, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "app            hybrid-serve-dev (volume hybrid-serve-dev-weights, shared state hybrid-serve-dev-state)" in proc.stdout

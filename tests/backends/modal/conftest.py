"""Backend fixtures: a Modal container laid out from the app's images and run by `modal_harness.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import REPO_ROOT

HARNESS = Path(__file__).with_name("modal_harness.py")
LAYOUT_PROBE = """
import json, sys
import backends.modal_backend.inference_api as api
from backends.modal_backend.layout import lay_out
root = sys.argv[1]
lay_out(api.model_image, __import__("pathlib").Path(root))
lay_out(api.ingress_image, __import__("pathlib").Path(root))
print(json.dumps(api.config.container_env))
"""


class ModalContainer:
    """The harness process: `url` serves the ingress; `command("reconcile" | "report")` answers JSON."""

    def __init__(self, process: subprocess.Popen[str], ready: dict[str, Any], root: Path, early: list[str]):
        self.process, self.ready, self.root = process, ready, root
        #: What the container printed before it served (its start's log lines).
        self.early = early
        self.url = f"http://127.0.0.1:{ready['port']}"

    def command(self, name: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        while line and not line.startswith("{"):  # the container's log lines (stderr shares the pipe)
            line = self.process.stdout.readline()
        assert line, "the harness exited"
        return json.loads(line)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)


@contextmanager
def modal_container(tmp_path: Path, settings_env: dict[str, str],
                    secret_env: dict[str, str] | None = None) -> Iterator[ModalContainer]:
    """Lay out the container's file system as the Modal client would upload it (the local deploy's
    settings in `settings_env`), give the process the image's environment with container paths
    mapped into the layout (plus `secret_env`, as Modal injects a modal.Secret), and run the
    container code there — network refused but for loopback."""
    root = tmp_path / "container"
    local = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    probe = subprocess.run([sys.executable, "-c", LAYOUT_PROBE, str(root)], capture_output=True, text=True,
                           env={**local, **settings_env, "PYTHONPATH": str(REPO_ROOT)}, cwd=tmp_path, timeout=180)
    assert probe.returncode == 0, probe.stderr
    image_env = json.loads(probe.stdout.splitlines()[-1])
    env = {**local, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for name, value in image_env.items():  # the container's absolute paths, inside the layout
        env[name] = str(root) + value if value.startswith(("/root", "/cache", "/traffic")) else value
    # A test's `reconcile` runs a pass at once: the deploy's minimum gap between passes (10 s by default,
    # shipped in the image's environment) would hold each one up to 10 s behind the ingress's own.
    env["HYBRID_WINDOW_UPDATE_INTERVAL_S"] = settings_env.get("HYBRID_WINDOW_UPDATE_INTERVAL_S", "0")
    env.update(secret_env or {})
    env["PYTHONPATH"] = f"{root / 'root'}{os.pathsep}{HARNESS.parent}"
    process = subprocess.Popen([sys.executable, str(HARNESS)], env=env, cwd=root / "root", text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        line, early = process.stdout.readline(), []
        while line and not line.startswith("{"):  # anything printed before the ready line
            early.append(line)
            line = process.stdout.readline()
        assert line, "the harness exited: " + "".join(early) + process.stdout.read()
        yield ModalContainer(process, json.loads(line), root, early)
    finally:
        if process.poll() is None:
            process.stdin.write("quit\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def modal_registry(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry every entry of which can reach a Modal container (local models are shipped)."""
    from core.serving.weights import sha256_of, weights_file

    fe = tiny_models["feature-extraction"]
    path = tmp_path_factory.mktemp("modal-registry") / "experiments.toml"
    path.write_text(
        f'[experiments.fe]\nsource = "{fe}"\ntask = "feature-extraction"\nsha256 = "{sha256_of(weights_file(fe))}"\n\n'
        f'[experiments.fe-2]\nsource = "{fe}"\ntask = "feature-extraction"\n\n'
        f'[experiments.fe-l4]\nsource = "{fe}"\ntask = "feature-extraction"\ngpu = "L4"\n\n'
        f'[experiments.clf]\nsource = "{tiny_models["text-classification"]}"\ntask = "text-classification"\n\n'
        f'[experiments.bad-sha]\nsource = "{fe}"\ntask = "feature-extraction"\nsha256 = "{"0" * 64}"\n\n'
        f'[experiments.gen]\nsource = "{tiny_models["text-generation"]}"\ntask = "text-generation"\n'
    )
    return path

"""The main job: `hybrid-serve serve` announces itself only when ready, its curl works, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import environ_of, free_port, ray_processes

pytestmark = pytest.mark.long  # scheduled early (tests/conftest.py)


TOKEN_ID, TOKEN_SECRET = "ak-Serv3T0kenIdQq1", "as-Serv3T0kenSecretWw2"


@pytest.mark.parametrize("backend", ["inprocess", "ray"])
def test_serve_prints_a_working_curl_and_stops_on_ctrl_c(backend: str, registry_file: Path, tmp_path: Path) -> None:
    """In production mode on Ray, no Ray process gets the Modal tokens, yet /health knows they are set."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_", "RAY_ADDRESS"))}
    mark = f"SERVE_COMMAND_TEST={uuid.uuid4().hex}"  # this server's Ray processes inherit it: only they are checked
    env.update(HYBRID_REGISTRY=str(registry_file), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update([mark.split("=")])
    production = backend == "ray"
    if production:
        env.update(MODAL_TOKEN_ID=TOKEN_ID, MODAL_TOKEN_SECRET=TOKEN_SECRET)
    exe = Path(sys.executable).parent / "hybrid-serve"
    before = ray_processes(mark)
    args = [str(exe), "serve", "--port", str(port)] + (["--backend", backend] if backend != "ray" else [])  # ray is the default
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while not any(line.startswith("try:") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
        assert lines[0].strip() == ("🚀 Production mode: Using Modal token ID and secret" if production
                                    else "🔧 Development mode: Using web authentication")
        assert f"hybrid-serve ({backend}) is serving on http://127.0.0.1:{port}" in "".join(lines)
        curl = shlex.split(next(line for line in lines if line.startswith("try:")).removeprefix("try:"))
        url, body = curl[curl.index("-X") + 2], curl[curl.index("-d") + 1]
        assert url == f"http://127.0.0.1:{port}/predict/fe"  # the registry's first experiment
        response = httpx.post(url, json=json.loads(body), timeout=120)  # ready means ready: no retry
        assert response.status_code == 200 and len(response.json()["outputs"]) == 1
        assert response.json()["cold_load"] is True
        configuration = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["configuration"]
        assert configuration["MODAL_TOKEN_ID"] == ("set" if production else "unset")
        if production:
            assert ray_processes(mark) - before, "none of this server's Ray processes found"
            leaked = [pid for pid in ray_processes(mark) - before if TOKEN_SECRET in environ_of(pid) or TOKEN_ID in environ_of(pid)]
            assert not leaked, f"Ray processes with the Modal tokens in their environment: {leaked}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()
    if backend == "ray":
        deadline = time.monotonic() + 20
        while ray_processes(mark) - before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes(mark) - before, "Ray processes left behind after Ctrl-C"

"""The main job: `hybrid-serve serve` announces itself only when ready, its curl works, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_inprocess_serve_prints_a_working_curl_and_stops_on_ctrl_c(registry_file: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    env.update(HYBRID_REGISTRY=str(registry_file), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.Popen(
        [str(exe), "serve", "--backend", "inprocess", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not any(line.startswith("try:") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
        assert lines[0].strip() == "🔧 Development mode: Using web authentication"
        assert f"http://127.0.0.1:{port}" in "".join(lines)
        curl = shlex.split(next(line for line in lines if line.startswith("try:")).removeprefix("try:"))
        url, body = curl[curl.index("-X") + 2], curl[curl.index("-d") + 1]
        assert url == f"http://127.0.0.1:{port}/predict/fe"  # the registry's first experiment
        response = httpx.post(url, json=json.loads(body), timeout=60)  # the server accepts at once: no retry
        assert response.status_code == 200 and len(response.json()["outputs"]) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0

"""Ctrl-C on `hybrid-serve serve --backend ray`, over real HTTP: as the in-process server does, the
requests replicas run finish (within HYBRID_SHUTDOWN_TIMEOUT_S), a request still waiting in a cold
start gets 503 with Retry-After, no client is left with a closed connection, and the server exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, silent_hub, wait_until

pytestmark = pytest.mark.long  # scheduled early (tests/conftest.py)


def in_flight(url: str) -> dict[str, int]:
    experiments = httpx.get(f"{url}/health", timeout=30).json()["activity"]["experiments"]
    return {e: a["in_flight"] for e, a in experiments.items() if a["in_flight"]}


def test_ctrl_c_finishes_running_requests_answers_waiting_ones_503_and_exits(registry_file: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_", "RAY_ADDRESS"))}
    # a replica holds each request up to 1 s for others to batch with: they are still running at Ctrl-C
    env.update(HYBRID_REGISTRY=str(registry_file), PYTHONUNBUFFERED="1", HYBRID_BATCH_WAIT_MS="1000",
               HYBRID_SHUTDOWN_TIMEOUT_S="20", HYBRID_REPLICA_MEMORY_MB="0")
    exe = Path(sys.executable).parent / "hybrid-serve"
    with silent_hub() as hub:  # the registry's `offline-hub` experiment: a cold start that never ends
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**env, **hub}, cwd=tmp_path)
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            while "is serving on" not in (lines[-1] if lines else ""):
                assert proc.poll() is None, "".join(lines)
                lines.append(proc.stdout.readline())
            url = f"http://127.0.0.1:{port}"
            assert httpx.post(f"{url}/predict/gen", json={"inputs": "load"}, timeout=120).status_code == 200
            results: dict[str, list[int]] = {"running": [], "waiting": []}
            retry_after: list[str | None] = []

            def client(kind: str, experiment: str, text: str) -> None:
                try:
                    r = httpx.post(f"{url}/predict/{experiment}", json={"inputs": text, "parameters": {"max_new_tokens": 100}
                                                                        if experiment == "gen" else {}}, timeout=120)
                    results[kind].append(r.status_code)
                    if kind == "waiting":
                        retry_after.append(r.headers.get("Retry-After"))
                except httpx.HTTPError:
                    results[kind].append(-1)  # a closed connection: no status

            threads = [threading.Thread(target=client, args=("waiting", "offline-hub", "never served"))]
            threads += [threading.Thread(target=client, args=("running", "gen", f"prompt {i}")) for i in range(8)]
            for thread in threads:
                thread.start()
            wait_until(lambda: in_flight(url) == {"gen": 8, "offline-hub": 1}, timeout_s=60, poll_s=0.02,
                       what="every request on its way")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 0
            for thread in threads:
                thread.join(30)
        finally:
            proc.kill()
            output = proc.stdout.read() if proc.stdout else ""
    print(f"after Ctrl-C: {results}; server said: {output.strip()}")
    assert results == {"running": [200] * 8, "waiting": [503]}, output
    assert retry_after == ["1"]

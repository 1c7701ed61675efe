"""The main job: `hybrid-serve serve` announces itself only when ready, its curl works, Ctrl-C stops it.

On Ray (one server for both, a Ray instance of its own), Ctrl-C over real HTTP does what the
in-process server does: the requests replicas run finish (within HYBRID_SHUTDOWN_TIMEOUT_S), a
request still waiting in a cold start gets 503 with Retry-After, no client is left with a closed
connection, the server exits 0 and leaves no Ray process behind."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import environ_of, free_port, ray_processes, silent_hub, wait_until

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
        # a replica holds each request up to 1 s for others to batch with: they are still running at Ctrl-C
        env.update(HYBRID_BATCH_WAIT_MS="1000", HYBRID_SHUTDOWN_TIMEOUT_S="20", HYBRID_REPLICA_MEMORY_MB="0")
        # an isolated request gets a 2 s window (the console soon shows fe's scale to zero), a second one 602 s
        env.update(MODAL_BASE_WARM_TIME="2", MODAL_EXTENSION_TIME="600")
    exe = Path(sys.executable).parent / "hybrid-serve"
    before = ray_processes(mark)
    args = [str(exe), "serve", "--port", str(port)] + (["--backend", backend] if backend != "ray" else [])  # ray is the default
    with silent_hub() as hub:  # the registry's `offline-hub` experiment: a cold start that never ends
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, **hub},
                                cwd=tmp_path)
        serve_and_stop(proc, backend, port, mark, before)
    if backend == "ray":
        deadline = time.monotonic() + 20
        while ray_processes(mark) - before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes(mark) - before, "Ray processes left behind after Ctrl-C"


def test_the_inprocess_console_shows_cold_starts_registry_changes_and_requests_when_asked(
        registry_file: Path, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The real `serve --backend inprocess` and `experiments add`, as an operator runs them: the console
    says when a model loads for a request (its window and why), when the registry changes, and — with
    HYBRID_LOG_REQUESTS — each request; without it, no request line."""
    from core.testing.process import served

    registry = tmp_path / "experiments.toml"
    registry.write_text(registry_file.read_text())
    env = {"HYBRID_REGISTRY": str(registry), "HYBRID_REGISTRY_POLL_S": "0.2", "HYBRID_TRAFFIC_RECORD": "false"}
    for log_requests in (True, False):
        with served("inprocess", {**env, "HYBRID_LOG_REQUESTS": str(log_requests).lower()}) as server:
            assert httpx.post(f"{server.url}/predict/fe", json={"inputs": "hello"}, timeout=60).status_code == 200
            console = lambda: "".join(server.output)  # noqa: E731
            wait_until(lambda: " cold start " in console(), timeout_s=10, what="the cold start's line")
            if log_requests:
                new_id = "console-added"
                added = subprocess.run([str(Path(sys.executable).parent / "hybrid-serve"), "experiments", "add", new_id,
                                        "--source", str(tiny_models["feature-extraction"]), "--task", "feature-extraction"],
                                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
                assert added.returncode == 0, added.stderr
                wait_until(lambda: f"registry       {new_id}  added" in console(), timeout_s=15,
                           what="the registry change's line")
        lines = [line.rstrip("\n") for line in server.output]
        cold = [line for line in lines if " cold start " in line]
        assert len(cold) == 1 and re.fullmatch(r"\d\d:\d\d:\d\d cold start     fe  \d+\.\d s \(model load\), "
                                                r"window 900 s \(isolated\)", cold[0]), lines
        requests = [line for line in lines if " request " in line]
        if log_requests:
            assert [line[9:] for line in requests] == ["request        fe  window 900 s (isolated)"], lines
            registry_lines = [line[9:] for line in lines if " registry " in line]
            assert registry_lines == [f"registry       {new_id}  added (feature-extraction, "
                                      f"{tiny_models['feature-extraction']})"], lines
        else:
            assert not requests, lines
        assert not any("\x1b" in line for line in lines)


def serve_and_stop(proc: subprocess.Popen[str], backend: str, port: int, mark: str, before: set[int]) -> None:
    production = backend == "ray"
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
        if production:  # the console: the request's cold start, then (a 2 s window) its scale to zero
            read_until(proc, lines, r"scale to zero  fe  after \d+\.\d s idle \(window 2 s, isolated\)", 60)
            cold = [line.rstrip() for line in lines if " cold start " in line]
            assert len(cold) == 1 and re.fullmatch(r"\d\d:\d\d:\d\d cold start     fe  \d+\.\d s \(replica \d+\.\d s "
                                                    r"\+ model \d+\.\d s\), window 2 s \(isolated\)", cold[0]), lines
            assert not [line for line in lines if " registry " in line], lines  # the first read is no change
            assert ray_processes(mark) - before, "none of this server's Ray processes found"
            leaked = [pid for pid in ray_processes(mark) - before if TOKEN_SECRET in environ_of(pid) or TOKEN_ID in environ_of(pid)]
            assert not leaked, f"Ray processes with the Modal tokens in their environment: {leaked}"
            lines.append(ctrl_c_with_requests_on_their_way(proc, f"http://127.0.0.1:{port}"))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=120) == 0
        finally:
            proc.kill()
    console = "".join(lines) + proc.stdout.read()  # type: ignore[union-attr]
    if production:  # from start to Ctrl-C: hybrid-serve's own lines only (Ray's and Serve's: --verbose)
        noise = [line for line in console.splitlines()
                 if " INFO " in line or "(raylet)" in line or "Token authentication" in line or "WARNING" in line]
        assert not noise and console.rstrip().endswith("stopped."), console[-3000:]


def read_until(proc: subprocess.Popen[str], lines: list[str], pattern: str, timeout_s: float) -> None:
    """Read the server's lines into `lines` until one matches `pattern`; fail (the server killed) after `timeout_s`."""
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    try:
        while not any(re.search(pattern, line) for line in lines):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"no line matching {pattern!r} within {timeout_s:g} s:\n{''.join(lines)}"
            lines.append(line)
    finally:
        watchdog.cancel()


def in_flight(url: str) -> dict[str, int]:
    experiments = httpx.get(f"{url}/health", timeout=30).json()["activity"]["experiments"]
    return {e: a["in_flight"] for e, a in experiments.items() if a["in_flight"]}


def ctrl_c_with_requests_on_their_way(proc: subprocess.Popen[str], url: str) -> str:
    """Ctrl-C with 8 requests running on a replica and one waiting in a cold start that never ends:
    the 8 finish (200), the waiting one gets 503 with Retry-After, and the server exits 0. Returns what
    the server printed meanwhile."""
    for _ in range(2):  # the second request's window (recent activity: 602 s) keeps the replica for the 8
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
    time.sleep(0.3)  # ... and handed to the replica (each is held there 1 s for a batch): running, not waiting
    assert results == {"running": [], "waiting": []}  # else the check below would prove nothing
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0
    for thread in threads:
        thread.join(30)
    output = proc.stdout.read() if proc.stdout else ""
    print(f"after Ctrl-C: {results}; server said: {output.strip()}")
    assert results == {"running": [200] * 8, "waiting": [503]}, output
    assert retry_after == ["1"]
    return output

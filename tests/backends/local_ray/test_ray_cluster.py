"""The local Ray backend on a real two-node cluster shared with another team's application: started
with `ray start --head` plus a second `ray start --address` on this machine (loopback only, token
authentication off for the test cluster). Joined through RAY_ADDRESS, hybrid-serve ships its code
and local models to the nodes, runs replicas on both nodes, keeps its windows through a Serve
controller restart, refuses a name already taken, serves where Serve really listens, and on Ctrl-C
removes only its own application."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from core.events import read_events
from tests.conftest import REPO_ROOT, environ_of, free_port

pytestmark = pytest.mark.long  # scheduled early (tests/conftest.py)

RAY = Path(sys.executable).parent / "ray"
HYBRID_SERVE = Path(sys.executable).parent / "hybrid-serve"
TIME_SCALE = 60  # every window 600 s (no extension) → 10 s real
OTHER_APP = """
import sys, ray
from ray import serve

@serve.deployment(ray_actor_options={"num_cpus": 0})
class Other:
    async def __call__(self, request):
        return "the other team's app"

ray.init()
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Other.bind(), name="other-team", route_prefix="/other")
print("deployed", flush=True)
"""
INSPECT = """
import json, ray
from ray import serve
from ray._private.state import actors  # the GCS's actor table: no dashboard needed

ray.init()
replicas = [(a["Name"].split("#")[1], a["Address"]["NodeID"]) for a in actors().values()
            if a.get("State") == "ALIVE" and (a.get("Name") or "").startswith("SERVE_REPLICA::hybrid-serve--")]
print(json.dumps({"apps": {n: str(s.status) for n, s in serve.status().applications.items()},
                  "nodes_by_replica": replicas}))
"""
WIDE_NODES = """
import json, time, ray
from ray._private.state import actors

ray.init()
print("watching", flush=True)
deadline = time.monotonic() + 180
seen = set()  # every node a replica of 'wide' has run on: the burst may be over before this looks
while len(seen) < 2 and time.monotonic() < deadline:
    seen |= {a["Address"]["NodeID"] for a in actors().values() if a.get("State") == "ALIVE"
             and (a.get("Name") or "").startswith("SERVE_REPLICA::hybrid-serve--")
             and a["Name"].split("#")[1] == "experiment-wide"}
    time.sleep(0.3)
print(json.dumps(sorted(seen)))
"""
KILL_CONTROLLER = """
import ray
ray.init()
ray.kill(ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve"), no_restart=False)
print("killed", flush=True)
"""


#: Every process of this test's cluster carries this in its environment (the processes `ray start`
#: starts inherit it): the teardown stops those alone. `ray stop` would stop every Ray instance on the
#: machine — the other xdist worker's too, mid-test.
CLUSTER_MARK = f"TEST_RAY_CLUSTER_MARK={uuid.uuid4().hex}"


def cluster_env(address: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_", "RAY_"))}
    env.update(RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    name, value = CLUSTER_MARK.split("=")
    env[name] = value
    if address:
        env["RAY_ADDRESS"] = address
    return env


def driver(script: str, address: str, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                          env=cluster_env(address), cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def driver_started(script: str, address: str) -> subprocess.Popen[str]:
    """`driver`, started in the background: `.communicate()` gives its output."""
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cluster_env(address), cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cluster")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = ["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run([str(RAY), "start", *head], check=True, capture_output=True, env=cluster_env(), timeout=180)
    try:
        subprocess.run([str(RAY), "start", f"--address={address}", "--num-cpus=1", "--disable-usage-stats"], check=True,
                       capture_output=True, env=cluster_env(), timeout=180)
        serve_port = free_port()
        assert "deployed" in driver(OTHER_APP, address, str(serve_port))
        yield {"address": address, "serve_port": serve_port, "root": root}
    finally:
        stop_marked(CLUSTER_MARK)


def stop_marked(mark: str, timeout_s: float = 6) -> None:
    """Stop every process whose environment holds `mark` (this cluster's, nothing else on the machine):
    SIGTERM, and SIGKILL for what is still there after half of `timeout_s` (a throwaway cluster)."""
    marked = {int(pid.name) for pid in Path("/proc").iterdir() if pid.name.isdigit() and mark in environ_of(int(pid.name))}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s / 2
        while time.monotonic() < deadline and (marked := {p for p in marked if Path(f"/proc/{p}").exists()
                                                           and mark in environ_of(p)}):
            time.sleep(0.2)
        if not marked:
            return


def serve_on(cluster: dict[str, Any], registry: Path, *args: str, **settings: str) -> subprocess.Popen[str]:
    env = cluster_env(cluster["address"])
    env.update(HYBRID_REGISTRY=str(registry), **settings)
    return subprocess.Popen([str(HYBRID_SERVE), "serve", "--port", str(free_port()), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=cluster["root"])


def replicas(url: str, experiment: str) -> int:
    return next(e["replicas"] for e in httpx.get(f"{url}/experiments", timeout=30).json() if e["id"] == experiment)


def wait_for_url(proc: subprocess.Popen[str], timeout_s: float = 240) -> tuple[str, list[str]]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        line = proc.stdout.readline()
        lines.append(line)
        if "is serving on" in line:
            return line.split("is serving on ")[1].split()[0], lines


def test_a_shared_two_node_cluster(cluster: dict[str, Any], tiny_models: dict[str, Path]) -> None:
    registry = cluster["root"] / "experiments.toml"  # local model directories: shipped to every node
    registry.write_text(f'[experiments.steady]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n\n'
                        f'[experiments.wide]\nsource = "{tiny_models["text-generation"]}"\ntask = "text-generation"\n')
    events = cluster["root"] / "events.jsonl"
    proc = serve_on(cluster, registry, HYBRID_TIME_SCALE=str(TIME_SCALE), HYBRID_EVENT_LOG=str(events),
                    MODAL_MAX_CONTAINERS="2", HYBRID_REPLICA_TARGET_ONGOING="1", HYBRID_REPLICA_CPUS="1",
                    HYBRID_REPLICA_MEMORY_MB="0", MODAL_BASE_WARM_TIME="600", MODAL_EXTENSION_TIME="0")
    try:
        url, lines = wait_for_url(proc)
        # Serve's proxies were started by the other team on their port: we serve there, and say so
        assert url == f"http://127.0.0.1:{cluster['serve_port']}" and any(line.startswith("note: ") for line in lines)

        # a second instance under the same name is refused, not deployed over ours
        twin = serve_on(cluster, registry)
        twin_out = twin.communicate(timeout=180)[0]
        assert twin.returncode == 2 and "already runs on this cluster" in twin_out and "Traceback" not in twin_out

        # replicas on both nodes (one CPU each): steady load from 8 clients needs a second replica, and goes
        # on until a driver (started first: joining the cluster takes seconds under load) saw both nodes
        inspect = driver_started(WIDE_NODES, cluster["address"])
        assert inspect.stdout is not None and inspect.stdout.readline().strip() == "watching", inspect.communicate()
        stop = threading.Event()

        def client(i: int) -> list[int]:
            codes = []
            while not stop.is_set() or not codes:
                codes.append(httpx.post(f"{url}/predict/wide", json={
                    "inputs": f"prompt {i}", "parameters": {"max_new_tokens": 100}}, timeout=240).status_code)
            return codes

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, i) for i in range(8)]
            try:
                deadline = time.monotonic() + 180
                while replicas(url, "wide") < 2:
                    assert time.monotonic() < deadline, "no second replica"
                    time.sleep(0.5)
                out, err = inspect.communicate(timeout=200)
            finally:
                stop.set()
            answers = [code for f in futures for code in f.result()]
        assert inspect.returncode == 0, err[-3000:]
        assert len(json.loads(out)) == 2, out
        assert answers and set(answers) == {200}, answers
        # both replica slots (one per node's CPU) hold 'wide' inside its window: a cold experiment is told
        # so (asked at once: the window, 10 s, runs from each replica's last request)
        full = httpx.post(f"{url}/predict/steady", json={"inputs": "x"}, timeout=240)
        assert full.status_code == 503 and full.headers["Retry-After"] == "10"
        assert "MODAL_MAX_CONTAINERS" in full.json()["error"]["message"]
        deadline = time.monotonic() + 90
        while replicas(url, "wide"):  # 'wide' scales to zero at the end of its window
            assert time.monotonic() < deadline, "'wide' did not scale to zero"
            time.sleep(0.5)
        time.sleep(1.0)

        # a window holds through a Serve controller restart, and ends on time after it
        done = httpx.post(f"{url}/predict/steady", json={"inputs": "x"}, timeout=240)
        assert done.status_code == 200 and done.json()["scaledown_window_s"] == 600
        finished = time.time()
        assert "killed" in driver(KILL_CONTROLLER, cluster["address"])
        time.sleep(5)  # half the window: a restart that forgot the window would have scaled it away by now
        early = [e for e in read_events(events) if e["experiment"] == "steady" and e["event"] == "scale_to_zero"]
        assert early == [], early
        deadline = time.time() + 60
        while not [e for e in read_events(events) if e["experiment"] == "steady" and e["event"] == "scale_to_zero"]:
            assert time.time() < deadline, "no scale_to_zero for 'steady' after its window"
            time.sleep(0.5)
        down = next(e for e in read_events(events) if e["experiment"] == "steady" and e["event"] == "scale_to_zero")
        assert abs(down["time"] - (finished + 600 / TIME_SCALE)) < 3.0, down
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
        (cluster["root"] / "serve.log").write_text(out)  # for a failure's post-mortem
    assert proc.returncode == 0, out
    after = json.loads(driver(INSPECT, cluster["address"]))  # the cluster still answers
    assert "other-team" in after["apps"] and not [app for app in after["apps"] if app.startswith("hybrid-serve")]
    assert httpx.get(f"http://127.0.0.1:{cluster['serve_port']}/other", timeout=30).text == "the other team's app"

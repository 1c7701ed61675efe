"""Shared fixtures and helpers: every test starts from a clean environment and an empty working
directory; tiny real models and a registry are built once per session; one fake clock, free ports
and the shared traces' paths serve every room of the suite."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import httpx
import pytest

from core.testing.process import free_port  # noqa: F401  (the suite's free ports are the kit's)

if TYPE_CHECKING:
    from core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTING_PREFIXES = ("MODAL_", "HYBRID_")
SHARED_TRACES = REPO_ROOT.parent / "shared" / "traces"
SHARED_2019 = REPO_ROOT / "data" / "azure-functions-2019" / "invocations_per_function.csv"
SHARED_LLM = REPO_ROOT / "data" / "azure-llm-inference-2023" / "conversation.csv"


def uses_session_ray(item: pytest.Item) -> bool:
    """The test serves on this session's Ray instance (the testing kit's Ray backend, which keeps it
    up for the next endpoint): its module is marked `session_ray`, or it is a kit test (`hybrid_serve`)."""
    return item.get_closest_marker("session_ray") is not None or item.get_closest_marker("hybrid_serve") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "session_ray: the module serves on this test session's Ray instance")
    config.addinivalue_line("markers", "long: the module takes half a minute or more (scheduled early)")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which would schedule by file alone
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """One xdist worker runs every test on the session's Ray instance (tests/scheduling.py)."""
    from tests.scheduling import SessionRayScheduling

    return SessionRayScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The session-Ray tests run first, together (one unit of work for xdist, tests/scheduling.py: about
    half of the suite, so it starts first), and the Ray instance stops after the last of them; then the
    long modules, so that the run does not end with one worker busy on a long module while the other
    idles; then the rest. xdist hands out its units in this order (`--no-loadscope-reorder`: it would
    otherwise order them by their number of tests)."""
    from tests.scheduling import marked_session_ray

    for item in items:
        if uses_session_ray(item) != marked_session_ray(item.path):
            raise pytest.UsageError(f"{item.nodeid}: mark a module that runs on the session's Ray instance with a "
                                    "module-level `pytestmark = pytest.mark.session_ray` (or `hybrid_serve`), so "
                                    "that xdist's controller, which reads the source, sends it to the Ray worker")
    items.sort(key=lambda item: (not uses_session_ray(item), item.get_closest_marker("long") is None))  # stable


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last test on the session's Ray instance, the instance stops: idle, Ray and Serve
    still keep half a core busy (the GCS, the raylet, Serve's controller and proxy), which the rest
    of the suite needs. A later test on it starts it again."""
    yield
    if uses_session_ray(item) and (nextitem is None or not uses_session_ray(nextitem)):
        from core.testing.backends import close_backends

        close_backends()


class FakeClock:
    """A clock tests drive: call it for the time, set or advance `now`, or `await sleep(s)` to pass time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make_settings(**overrides: Any) -> Settings:
    """The settings a test asks for: `overrides` over the environment (cleaned by `clean_settings_env`)
    and the defaults, never a `.env` file. Tests of how settings are read call `load_settings` itself."""
    from core.settings import load_settings

    return load_settings(env_file=None, **overrides)


def activity_of(tracker, experiment_id: str):  # type: ignore[no-untyped-def]
    """One experiment's activity from the tracker's snapshot (None when it is not remembered)."""
    return next((a for a in tracker.snapshot() if a.experiment_id == experiment_id), None)


def wait_until(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition",
               poll_s: float = 0.05) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


@dataclass
class LabelsSeen:
    """What classifier clients under load got: every status, and the labels of every 200 answer (in
    the order they came back, and with the times each was sent and received)."""

    statuses: list[int] = field(default_factory=list)
    seen: list[set[str]] = field(default_factory=list)
    answered: list[tuple[float, float, set[str]]] = field(default_factory=list)

    def sent_after_first(self, labels: set[str]) -> list[set[str]]:
        """The labels of every answer to a request sent after the first answer with `labels` came back:
        once a client has seen the new model, no later request may meet the old one (a request sent
        before may still finish on it, and come back later)."""
        first = min(received for _, received, seen in self.answered if seen == labels)
        return [seen for sent, _, seen in self.answered if sent > first]


def _invalid(path: Path) -> None:
    path.write_text("[experiments.x\n")


def _empty(path: Path) -> None:
    path.write_text("")


def _binary(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _deleted(path: Path) -> None:
    path.unlink()


#: What can happen to a registry file under a running server, and what the error then says.
REGISTRY_TROUBLES = [(_invalid, "not valid TOML"), (_empty, "is empty"), (_binary, "not UTF-8 text"),
                     (_folder, "is a folder"), (_deleted, "not found")]


@contextmanager
def classifier_under_load(url: str, experiment: str, inputs: str | list[str], clients: int,
                          headers: dict[str, str], timeout_s: float) -> Iterator[LabelsSeen]:
    """`clients` threads asking `experiment` for its top two labels, back to back, until the block
    ends (a model swap happens inside it); they are stopped and joined however it ends."""
    load, stop = LabelsSeen(), threading.Event()

    def client() -> None:
        with httpx.Client(timeout=timeout_s, headers=headers) as http:
            while not stop.is_set():
                sent = time.monotonic()
                response = http.post(f"{url}/predict/{experiment}", json={"inputs": inputs, "parameters": {"top_k": 2}})
                load.statuses.append(response.status_code)
                if response.status_code == 200:
                    labels = {o["label"] for o in response.json()["outputs"][0]}
                    load.seen.append(labels)
                    load.answered.append((sent, time.monotonic(), labels))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout_s)


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (a hung tracking
    server); yields its port. Its connections are closed when the block ends."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed: the block ended
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        except OSError:
            pass
        listener.close()
        thread.join(5)
        for connection in accepted:
            connection.close()


def pool_applications(app_name: str) -> set[str]:
    """The Serve applications of `app_name`'s experiment pools on the Ray this process is connected to."""
    from ray import serve

    from backends.local_ray.pool import pool_app_name

    return {name for name in serve.status().applications if name.startswith(pool_app_name(app_name, ""))}


@contextmanager
def silent_hub() -> Iterator[dict[str, str]]:
    """The environment of a Hugging Face Hub that accepts connections and never answers: a model from
    it is a cold start that does not end (until the test ends it)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # the kernel accepts; nobody ever reads or answers
        yield {"HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}", "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_TELEMETRY": "1"}


def ray_processes(marked: str | None = None) -> set[int]:
    """PIDs of Ray's own processes (GCS, raylet, workers) on this machine; with `marked`, only those whose
    environment holds that text (a variable given to the process that started their Ray instance: its
    processes inherit it). Tests run in parallel, and beside other test runs: another Ray instance's
    processes are not this test's."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = {int(line.split(None, 1)[0]) for line in out.splitlines()
            if any(k in line for k in ("gcs_server", "raylet", "ray::", "default_worker.py"))}
    return pids if marked is None else {pid for pid in pids if marked in environ_of(pid)}


def environ_of(pid: int) -> str:
    """A process's environment as text ("" once it is gone)."""
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes().decode(errors="replace")
    except OSError:  # gone meanwhile
        return ""


@pytest.fixture(autouse=True)
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No hybrid-serve variable leaks in from the developer's shell, no stray `.env` is read, and the
    traffic recording goes to the test's folder."""
    for name in list(os.environ):
        if name.upper().startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HYBRID_TRAFFIC_DIR", str(tmp_path / "traffic"))  # each test's own, never the home folder
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real tiny models for each task, built offline once per session."""
    from tests.tiny_models import build_feature_extraction, build_text_classification, build_text_generation

    root = tmp_path_factory.mktemp("models")
    return {
        "feature-extraction": build_feature_extraction(root / "fe"),
        "text-classification": build_text_classification(root / "clf"),
        "text-generation": build_text_generation(root / "gen"),
    }


@pytest.fixture(scope="session")
def registry_file(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one experiment per task, plus experiments whose load must fail."""
    from core.serving.weights import sha256_of, weights_file

    fe = tiny_models["feature-extraction"]
    path = tmp_path_factory.mktemp("registry") / "experiments.toml"
    path.write_text(
        f"""
[experiments.fe]
source = "{fe}"
task = "feature-extraction"
sha256 = "{sha256_of(weights_file(fe))}"

[experiments.fe-2]
source = "{fe}"
task = "feature-extraction"

[experiments.fe-3]
source = "{fe}"
task = "feature-extraction"

[experiments.clf]
source = "{tiny_models['text-classification']}"
task = "text-classification"

[experiments.gen]
source = "{tiny_models['text-generation']}"
task = "text-generation"

[experiments.bad-sha]
source = "{fe}"
task = "feature-extraction"
sha256 = "{'0' * 64}"

[experiments.missing]
source = "./does-not-exist"
task = "feature-extraction"

[experiments.offline-hub]
source = "hybrid-serve-tests/no-such-model"
task = "feature-extraction"
"""
    )
    return path

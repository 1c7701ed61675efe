"""`hybrid-serve bench` run for real: against the in-process emulator it starts itself (the Ray default
differs only in `--backend`), and with `--url` against a server with a bearer token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from core.testing.process import Served, served

TOKEN = "bench-token-for-tests"


def bench(tmp_path: Path, registry: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    full.update(HYBRID_REGISTRY=str(registry), HYBRID_TRAFFIC_RECORD="false", HF_HUB_OFFLINE="1", **(env or {}))
    exe = Path(sys.executable).parent / "hybrid-serve"
    return subprocess.run([str(exe), "bench", *args], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=300)


def figures(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def assert_measured(data: dict[str, Any], clients: int, cold_starts: int = 1) -> None:
    cold = data["cold_start"]
    assert cold["measured"] == cold_starts and [r["cold"] for r in cold["rounds"]] == [True] * cold_starts
    assert cold["median"]["client_s"] > 0 and cold["median"]["model_load_s"] > 0
    assert cold["median"]["client_s"] >= cold["median"]["model_load_s"]  # the client waited for the load
    warm = data["warm"]
    assert warm["clients"] == clients and warm["answered"] > 0 and warm["errors"] == 0
    latency = warm["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert warm["throughput_rps"] > 0 and data["single_client"]["throughput_rps"] > 0
    assert data["batching_gain"]["value"] == pytest.approx(
        warm["throughput_rps"] / data["single_client"]["throughput_rps"], rel=0.01)


def test_bench_on_the_local_emulator_reports_every_figure_with_units(tmp_path: Path, registry_file: Path) -> None:
    out = tmp_path / "bench.json"
    done = bench(tmp_path, registry_file, "fe", "--backend", "inprocess", "--clients", "3", "--duration", "1.5",
                 "--cold-starts", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = figures(out)
    assert (data["experiment"], data["task"], data["backend"]) == ("fe", "feature-extraction", "inprocess")
    assert_measured(data, clients=3, cold_starts=2)  # each on a fresh server
    assert data["cold_start"]["median"]["container_start_s"] is None  # in-process: no container
    assert data["ttft"] is None  # not a generation experiment
    for shown in (r"client's wait +[\d.]+ +s$", r"latency p99 +[\d.]+ +ms$", r"throughput +[\d.]+ +req/s$",
                  r"batching gain \(3 clients ÷ 1\) +[\d.]+ +×$", r"^ +imports: included in container start$"):
        assert re.search(shown, done.stdout, re.MULTILINE), (shown, done.stdout)
    assert done.stderr.count("starting hybrid-serve serve --backend inprocess") == 2
    assert "cold start, median of 2: client's wait" in done.stdout
    for phase in ("cold start 1/2", "cold start 2/2", "warm load: 3 clients",
                  "warm load: 1 client", "wrote"):
        assert phase in done.stderr, done.stderr


def test_bench_of_a_generation_experiment_times_the_first_token_or_says_why_not(tmp_path: Path, registry_file: Path) -> None:
    out = tmp_path / "gen.json"
    done = bench(tmp_path, registry_file, "gen", "--backend", "inprocess", "--clients", "2", "--duration", "1",
                 "--cold-starts", "0", "--max-new-tokens", "3", "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = figures(out)
    assert data["cold_start"]["measured"] == 0 and data["plan"]["max_new_tokens"] == 3
    ttft = data["ttft"]
    if ttft["available"]:
        assert ttft["p50_ms"] > 0 and len(ttft["samples_ms"]) == 5
    else:
        assert ttft["note"] == "not available (server does not stream)"
        assert "not available (server does not stream)" in done.stdout
    assert "time to first token p50" in done.stdout


def test_an_unknown_experiment_exits_2_before_starting_a_server(tmp_path: Path, registry_file: Path) -> None:
    done = bench(tmp_path, registry_file, "no-such-experiment", "--backend", "inprocess")
    assert done.returncode == 2
    assert "unknown experiment 'no-such-experiment'" in done.stderr and "registered: fe" in done.stderr
    assert "starting hybrid-serve serve" not in done.stderr


@pytest.fixture(scope="module")
def with_token(registry_file: Path) -> Iterator[Served]:
    with served("inprocess", {"HYBRID_REGISTRY": str(registry_file), "HYBRID_API_TOKEN": TOKEN,
                              "HYBRID_TRAFFIC_RECORD": "false"}) as server:
        yield server


def test_bench_of_a_url_sends_the_bearer_token(tmp_path: Path, registry_file: Path, with_token: Served) -> None:
    out = tmp_path / "url.json"
    done = bench(tmp_path, registry_file, "clf", "--url", with_token.url, "--token", TOKEN, "--clients", "2",
                 "--duration", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = figures(out)
    assert data["url"] == with_token.url and data["backend"] is None and data["state_before"] == "cold"
    assert_measured(data, clients=2)
    # without --token, HYBRID_API_TOKEN is the token sent
    again = bench(tmp_path, registry_file, "clf", "--url", with_token.url, "--cold-starts", "0", "--clients", "1",
                  "--duration", "0.5", env={"HYBRID_API_TOKEN": TOKEN})
    assert again.returncode == 0, again.stderr


def test_bench_of_a_url_without_the_token_reports_the_401(tmp_path: Path, registry_file: Path, with_token: Served) -> None:
    done = bench(tmp_path, registry_file, "clf", "--url", with_token.url, "--duration", "1")
    assert done.returncode == 2
    assert "answered 401" in done.stderr and "credentials: none" in done.stderr and "--token" in done.stderr
    assert "Modal-Key" not in done.stderr and "--modal-key" in done.stderr
    unknown = bench(tmp_path, registry_file, "nope", "--url", with_token.url, "--token", TOKEN)
    assert unknown.returncode == 2 and "unknown experiment 'nope'" in unknown.stderr

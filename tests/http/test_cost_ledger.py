"""The cost ledger of the in-process backend over real HTTP: a model's load is its container's cold
start, its requests busy time, the rest warm-idle until evicted; `/experiments/{id}`, `/health` and
`/metrics` show the seconds and their price, and every wall time also in ISO 8601 UTC."""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.http.app import create_app
from core.prices import price_table
from core.serving.engine import InferenceEngine
from core.serving.models import load_model
from core.serving.registry import Registry
from core.serving.request_path import RequestPath
from tests.conftest import make_settings
from tests.http.test_api import make_path
from tests.live import live_server

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class SlowLoader:
    """The real loader, each load taking at least `load_s` (a cold start long enough to measure)."""

    def __init__(self, load_s: float):
        self.load_s = load_s

    def __call__(self, experiment):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        model = load_model(experiment)
        time.sleep(max(0.0, self.load_s - (time.monotonic() - start)))
        return model


def iso_keys(tree: Any) -> list[tuple[str, Any, Any]]:
    """Every (key, epoch value, ISO value) pair of the tree."""
    out = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if isinstance(key, str) and key.endswith("_iso"):
                out.append((key, tree.get(key.removesuffix("_iso")), value))
            out.extend(iso_keys(value))
    elif isinstance(tree, list):
        for item in tree:
            out.extend(iso_keys(item))
    return out


def test_the_ledger_counts_a_models_life_and_prices_it(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = make_path(registry_file, loader=SlowLoader(1.0), cost_gpu="H100", cache_max_models=1)
    with live_server(create_app(path)) as url, httpx.Client(base_url=url, timeout=60) as http:
        started = time.time()
        assert http.post("/predict/fe", json={"inputs": "hello"}).status_code == 200  # its cold start: ≥ 1 s
        for _ in range(20):
            http.post("/predict/fe", json={"inputs": ["a sentence"] * 8})
        time.sleep(1.0)  # idle, still loaded
        assert http.post("/predict/clf", json={"inputs": "evicts fe"}).status_code == 200  # one model fits
        ended = time.time()
        one = http.get("/experiments/fe")
        assert one.status_code == 200, one.text
        cost = one.json()["cost"]
        assert cost["measured"] and cost["containers"] == 0  # evicted: its container stopped
        seconds = cost["since_start"]["container_seconds"]
        assert seconds["cold_start"] >= 1.0 and seconds["busy"] > 0 and seconds["warm_idle"] >= 1.0
        assert seconds["prewarmed"] == 0
        assert cost["since_start"]["total_seconds"] <= ended - started
        per_s = price_table().per_second["H100"]
        assert cost["price"] == {"per_second": per_s, "gpu": "H100", "source": cost["price"]["source"], "currency": "USD"}
        assert cost["since_start"]["total_cost"] == pytest.approx(cost["since_start"]["total_seconds"] * per_s, rel=1e-3)
        assert cost["last_hour"]["total_seconds"] == cost["today"]["total_seconds"] == cost["since_start"]["total_seconds"] \
            or time.gmtime(started).tm_mday != time.gmtime(ended).tm_mday  # the run crossed midnight UTC

        health = http.get("/health").json()["cost"]
        assert health["measured"] and set(health["experiments"]) == {"fe", "clf"}
        assert health["experiments"]["clf"]["containers"] == 1  # loaded now
        assert health["all"]["since_start"]["total_seconds"] == pytest.approx(
            sum(e["since_start"]["total_seconds"] for e in health["experiments"].values()), abs=0.5)

        rows = {r["id"]: r for r in http.get("/experiments").json()}
        assert rows["fe"]["cost_today"]["total_seconds"] == pytest.approx(cost["today"]["total_seconds"], abs=0.01)
        assert rows["gen"]["cost_today"]["total_seconds"] == 0  # never loaded

        families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
        samples = {(s.labels["experiment"], s.labels["state"]): s.value for s in families["hybrid_container_seconds"].samples}
        assert samples[("fe", "cold_start")] == pytest.approx(seconds["cold_start"], abs=0.01)
        costs = {(s.labels["experiment"], s.labels["state"]): s.value for s in families["hybrid_container_cost_usd"].samples}
        assert costs[("fe", "busy")] == pytest.approx(seconds["busy"] * per_s, rel=0.05)

        missing = http.get("/experiments/nope")
        assert missing.status_code == 404 and "not registered" in missing.json()["error"]["message"]


def test_every_wall_time_in_the_state_views_is_also_iso_8601_utc(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with live_server(create_app(make_path(registry_file))) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/predict/fe", json={"inputs": "hello"}).status_code == 200
        answers = [http.get("/health").json(), http.get("/experiments").json(), http.get("/experiments/fe").json()]
    pairs = [pair for answer in answers for pair in iso_keys(answer)]
    assert {key for key, _, _ in pairs} >= {"as_of_iso", "applied_at_iso"}, pairs
    for key, epoch, iso in pairs:
        assert ISO.match(iso), (key, iso)
        parsed = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
        assert abs(parsed - epoch) < 1.0, (key, epoch, iso)


def test_an_experiment_on_its_own_gpu_is_priced_at_that_gpu(tiny_models: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = tmp_path / "experiments.toml"
    registry.write_text(f'[experiments.big]\nsource = "{tiny_models["feature-extraction"]}"\ntask = "feature-extraction"\n'
                        f'gpu = "H100"\n\n[experiments.small]\nsource = "{tiny_models["feature-extraction"]}"\n'
                        f'task = "feature-extraction"\n')
    table = price_table().per_second
    with live_server(create_app(make_path(registry, modal_gpu="T4"))) as url, httpx.Client(base_url=url, timeout=60) as http:
        for experiment in ("big", "small"):
            assert http.post(f"/predict/{experiment}", json={"inputs": "x"}).status_code == 200
        cost = http.get("/health").json()["cost"]
        big = http.get("/experiments/big").json()["cost"]
    assert cost["price"]["gpu"] == "T4" and big["price"]["gpu"] == "H100" and big["price"]["per_second"] == table["H100"]
    views = cost["experiments"]
    assert views["big"]["price"]["per_second"] == table["H100"] and views["small"]["price"]["per_second"] == table["T4"]
    for experiment, gpu in (("big", "H100"), ("small", "T4")):
        since = views[experiment]["since_start"]
        # both are rounded: the cost to 6 decimals (±5e-7), the seconds to 3 (±5e-4 s at the GPU's price)
        assert since["total_cost"] == pytest.approx(since["total_seconds"] * table[gpu], rel=1e-3,
                                                    abs=5e-7 + 5e-4 * table[gpu] + 1e-9)
    assert cost["all"]["since_start"]["total_cost"] == pytest.approx(
        views["big"]["since_start"]["total_cost"] + views["small"]["since_start"]["total_cost"], abs=2e-6)


class UnreadableLedger(InferenceEngine):
    async def usage(self, only=None):  # type: ignore[no-untyped-def]
        raise ConnectionError("the store is away")


def test_a_ledger_that_cannot_be_read_leaves_health_answering_and_says_why(registry_file: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = make_settings(registry_path=registry_file)
    path = RequestPath(settings, Registry.load(registry_file), UnreadableLedger(settings))
    with live_server(create_app(path)) as url, httpx.Client(base_url=url, timeout=60) as http:
        health = http.get("/health")
        one = http.get("/experiments/fe")
        metrics = http.get("/metrics")
    assert health.status_code == 200 and one.status_code == 200 and metrics.status_code == 200
    assert health.json()["cost"] == {"measured": False, "price": health.json()["cost"]["price"],
                                     "why": "the cost ledger could not be read: ConnectionError: the store is away"}
    assert one.json()["cost"]["measured"] is False and one.json()["cost_today"] is None

"""`hybrid-serve bench`'s statistics and report: percentiles, the load summary's JSON, the table's units."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from core.bench.plan import IMPORTS_INCLUDED, Auth, BenchError, Plan
from core.bench.probes import ColdRound
from core.bench.report import number, render, rows, write_json
from core.bench.run import cold_summary
from core.bench.stats import LoadResult, percentile


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order must not matter
    assert percentile(values[::-1], 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_a_load_result_in_json_has_units_in_its_names_and_ordered_percentiles() -> None:
    result = LoadResult(2.0, latencies=[0.010, 0.020, 0.030, 0.040, 0.100], statuses=Counter({200: 5, 503: 1}),
                        batch_inputs=[1, 2, 3, 2, 2], cold_answers=1)
    out = result.to_json()
    assert out["throughput_rps"] == 2.5  # answered (200) requests per second
    assert out["errors"] == 1 and out["requests"] == 6 and out["answered"] == 5
    assert out["statuses"] == {"200": 5, "503": 1}
    assert out["latency_ms"] == {"p50": 30.0, "p95": 88.0, "p99": 97.6, "mean": 40.0}
    assert out["mean_batch_inputs"] == 2.0 and out["cold_answers"] == 1
    assert json.loads(json.dumps(out)) == out


def test_nothing_answered_is_null_in_json_not_nan() -> None:
    out = LoadResult(1.0, statuses=Counter({-1: 3})).to_json()
    assert out["latency_ms"]["p50"] is None and out["mean_batch_inputs"] is None
    assert out["throughput_rps"] == 0 and out["errors"] == 3


def test_numbers_keep_about_three_digits() -> None:
    assert [number(v) for v in (0.01234, 5.678, 12.34, 1234.5, None)] == ["0.01", "5.68", "12.3", "1234", "—"]


def result(cold: list[ColdRound], clients: int = 8, ttft: dict[str, object] | None = None) -> dict[str, object]:
    warm = LoadResult(10.0, latencies=[0.01, 0.02, 0.03], statuses=Counter({200: 400}), batch_inputs=[4, 4])
    single = LoadResult(10.0, latencies=[0.005, 0.006], statuses=Counter({200: 100}), batch_inputs=[1])
    return {"experiment": "mine", "task": "text-generation", "target": "local emulator (--backend ray)",
            "warm": {"clients": clients, **warm.to_json()}, "single_client": {"clients": 1, **single.to_json()},
            "batching_gain": {"value": 4.0, "definition": "throughput with 8 … ÷ 1 client"}, "ttft": ttft,
            "cold_start": cold_summary(cold)}


def test_the_table_gives_every_figure_a_unit() -> None:
    cold = [ColdRound(True, 9.0, 8.5, 3.0, 5.0), ColdRound(True, 11.0, 10.5, 4.0, 6.0),
            ColdRound(False, 0.1, 0.0, None, None, "the experiment was warm: no cold start")]
    table = dict((figure.strip(), (value, unit)) for figure, value, unit in
                 rows(result(cold, ttft={"available": True, "p50_ms": 42.0})))
    assert table["cold start, median of 2: client's wait"] == ("10.0", "s")
    assert table["container start"] == ("3.50", "s") and table["model load"] == ("5.50", "s")
    assert table[f"imports: {IMPORTS_INCLUDED}"] == ("", "")  # the server did not say
    assert table["warm, 8 clients: latency p50"] == ("20.0", "ms")
    split = dict((f.strip(), v) for f, v, _ in rows(result([ColdRound(True, 9.0, 8.5, 3.0, 5.0, imports_s=1.5)])))
    assert split["of which imports"] == "1.50" and split["container start"] == "3.00"  # the replica says
    assert table["throughput"][1] == "req/s"
    assert table["batching gain (8 clients ÷ 1)"] == ("4.00", "×")
    assert table["time to first token p50"] == ("42.0", "ms")
    text = render(result(cold, ttft={"available": True, "p50_ms": 42.0}))
    assert all(len(line) <= 80 for line in text.splitlines())
    for unit in (" s", " ms", " req/s", " ×", IMPORTS_INCLUDED, "batching gain: throughput with 8"):
        assert unit in text


def test_what_was_not_measured_says_why() -> None:
    inprocess = ColdRound(True, 2.0, 1.9, None, 1.9, "in-process: no container starts, the model loads in the server")
    listed = rows(result([inprocess], clients=1, ttft={"available": False, "note": "not available (server does not stream)"}))
    table = {f.strip(): (v, u) for f, v, u in listed}
    assert table["container start"] == ("n/a (in-process)", "")
    assert table["batching gain"] == ("n/a (1 client)", "")
    assert [f for f, _, _ in listed if "latency p50" in f] == ["warm, 1 client: latency p50"]  # one load phase
    assert table["time to first token p50"] == ("not available (server does not stream)", "")
    assert {f.strip(): v for f, v, _ in rows(result([]))}["cold start"] == "not measured"


def test_the_json_file_holds_every_figure(tmp_path: Path) -> None:
    written = tmp_path / "out" / "bench.json"
    write_json(written, result([ColdRound(True, 9.0, 8.5, 3.0, 5.0)]))
    data = json.loads(written.read_text())
    assert data["cold_start"]["median"] == {"client_s": 9.0, "server_wait_s": 8.5, "container_start_s": 3.0, "imports_s": None,
                                            "model_load_s": 5.0}
    assert data["cold_start"]["imports"] == IMPORTS_INCLUDED
    assert set(data["warm"]) >= {"throughput_rps", "latency_ms", "errors", "mean_batch_inputs", "duration_s"}


def test_the_plan_sends_credentials_and_generation_parameters() -> None:
    plan = Plan("mine", auth=Auth("t0k", "key", "secret"), max_new_tokens=4)
    assert plan.auth.headers() == {"Authorization": "Bearer t0k", "Modal-Key": "key", "Modal-Secret": "secret"}
    assert plan.auth.describe() == "bearer token and Modal proxy auth" and Auth().headers() == {}
    assert plan.payload("text-generation", stream=True) == {"inputs": plan.input, "parameters": {"max_new_tokens": 4},
                                                            "stream": True}
    assert plan.payload("feature-extraction") == {"inputs": plan.input}
    with pytest.raises(BenchError) as refused:
        Plan("mine", clients=0)
    assert refused.value.exit_code == 2

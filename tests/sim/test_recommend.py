"""`hybrid-serve recommend`: each experiment's own traffic replayed through the settings, the one that
meets the target chosen (by default the cheapest with no more cold starts than now), thin traffic
said so in words, every line within 100 columns, `--json` for machines, a PNG plot — from a trace,
from a recording, and from a running endpoint over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.http.app import create_app
from core.prices import price_of
from core.sim.advice_report import WIDTH, render
from core.sim.recommend import Target, advise, how_to_set
from core.sim.traces import Request
from tests.conftest import make_settings
from tests.http.test_api import make_path
from tests.live import live_server

PRICE = price_of("T4", None)


def synthetic(hours: float = 6) -> list[Request]:
    """'steady': a request every 200 s (a 5-minute window never goes cold); 'sparse': every 2 hours
    (every window up to 1 h goes cold each time); 'once': one request."""
    start, end = 1_700_000_000.0, 1_700_000_000.0 + hours * 3600
    requests = [Request(start + t, "steady", 0.5) for t in range(0, int(end - start), 200)]
    requests += [Request(start + t, "sparse", 0.5) for t in range(0, int(end - start), 7200)]
    requests.append(Request(start + 100.5, "once", 0.5))
    return sorted(requests, key=lambda r: r.time_s)


def row(outcomes, spec):  # type: ignore[no-untyped-def]
    return next(o for o in outcomes if o.spec == spec)


def test_the_default_advice_is_the_cheapest_with_no_more_cold_starts_than_now() -> None:
    settings = make_settings()  # hybrid, 900 s + 900 s
    advice = advise(synthetic(), settings, PRICE)
    now = advice.overall[0]
    assert now.spec == "hybrid" and advice.current == "hybrid"
    # the adaptive policy at a low cold-start price learns steady's 200 s period: it lets the container go
    # a minute after each request and brings it back 3 minutes after it (80 s idle a period, not 199.5)
    assert advice.advised is not None and advice.advised.spec == "adaptive:80"
    assert advice.advised.cold_starts == now.cold_starts
    assert advice.advised.idle_cost_per_day < row(advice.overall, "fixed:300").idle_cost_per_day < now.idle_cost_per_day
    # per experiment: steady's 200 s gaps stay warm, cheapest by the pre-warm; sparse goes cold under
    # every window, so the cheapest one wins
    assert advice.advised_per_experiment["steady"].spec == "adaptive:80"
    assert row(advice.per_experiment["steady"], "adaptive:80").idle_hours_per_day == pytest.approx(
        107 * (60 + 20) / 3600 * 4, rel=0.08)  # and a few periods kept warm while it learns
    assert advice.advised_per_experiment["sparse"].spec == "fixed:60"
    sparse = advice.per_experiment["sparse"]
    assert {o.cold_start_pct for o in sparse} == {100.0}
    # idle per day from the span (6 h scaled ×4); the windows open at the end apart, once
    steady_60 = row(advice.per_experiment["steady"], "fixed:300")
    assert steady_60.idle_hours_per_day == pytest.approx(107 * 199.5 / 3600 * 4, rel=0.02)
    assert steady_60.idle_hours_after_end == pytest.approx(300 / 3600, rel=0.02)


def test_a_target_chooses_within_it_and_says_when_none_meets_it() -> None:
    settings = make_settings()
    capped = advise(synthetic(), settings, PRICE, Target(max_cold_start_pct=50))
    assert capped.advised is not None and capped.advised.cold_start_pct <= 50
    budget = advise(synthetic(), settings, PRICE, Target(budget_per_day=5))
    assert budget.advised is not None and budget.advised.idle_cost_per_day <= 5
    assert budget.why.startswith("the fewest cold starts")
    impossible = advise(synthetic(), settings, PRICE, Target(max_cold_start_pct=0.5))
    assert impossible.advised is None and "no setting compared meets cold starts ≤ 0.5 %" in impossible.why
    text = render(impossible, settings, "a test", 1_700_000_000.0, "T4", PRICE.per_second)
    assert "Recommendation: none — no setting compared meets" in text


def test_thin_traffic_is_said_in_plain_words() -> None:
    settings = make_settings()
    short = [Request(1_700_000_000.0 + t, "a", 0.1) for t in (0, 5, 10, 400)]
    advice = advise(short, settings, PRICE)
    words = " ".join(advice.notes)
    assert "spans only 6.7 minutes" in words and "fewer than 20 requests (a)" in words
    assert "Every setting compared gives the same cold starts" not in words  # fixed:60/120 go cold at the 390 s gap
    with pytest.raises(ValueError, match="nothing to advise from"):
        advise([], settings, PRICE)


def test_the_text_fits_100_columns_and_names_units_and_how_to_set_it() -> None:
    settings = make_settings()
    advice = advise(synthetic(), settings, PRICE)
    long_id = [Request(r.time_s, "experiment-with-a-very-long-identifier-" + r.experiment_id, r.duration_s)
               for r in synthetic()]
    text = render(advise(long_id, settings, PRICE), settings, "the trace " + "x" * 120, 1_700_000_000.0, "T4",
                  PRICE.per_second)
    assert "experiment-with-a…" in text and "hybrid:conservative" in render(  # the widest setting name fits too
        advise(long_id, settings, PRICE, Target(max_cold_start_pct=100)), settings, "t", 1.0, "T4", PRICE.per_second)
    text = render(advice, settings, "the trace " + "x" * 120, 1_700_000_000.0, "T4", PRICE.per_second)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    header = next(line for line in text.splitlines() if line.startswith("setting"))
    for unit in ("cold (%)", "idle (ctr-h/day)", "idle ($/day)", "after end (ctr-h)"):
        assert unit in header
    assert "Set: HYBRID_POLICY=adaptive HYBRID_ADAPTIVE_KAPPA=80" in text
    assert how_to_set("hybrid:performance", settings) == (  # not HYBRID_PRESET: .env's explicit values would win
        "HYBRID_POLICY=hybrid MODAL_BASE_WARM_TIME=1800 MODAL_EXTENSION_TIME=1800 MODAL_ACTIVITY_WINDOW=600")
    assert how_to_set("adaptive:80", settings) == "HYBRID_POLICY=adaptive HYBRID_ADAPTIVE_KAPPA=80"


def test_the_cli_reads_a_trace_writes_json_and_the_plot(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,experiment_id,duration_ms\n" + "".join(
        f"{r.time_s:.3f},{r.experiment_id},500\n" for r in synthetic()))
    plot = tmp_path / "out" / "tradeoff.png"
    result = CliRunner().invoke(app, ["recommend", "--trace", str(trace), "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["advised"]["spec"] == "adaptive:80" and body["current"] == "hybrid"
    assert body["per_experiment"]["sparse"]["advised"]["spec"] == "fixed:60"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_the_cli_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["recommend", "--recording", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no traffic recording there" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["recommend", "--recording", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no answered request to replay" in empty.output
    closed = runner.invoke(app, ["recommend", "--from", "http://127.0.0.1:9"])
    assert closed.exit_code == 2 and "http://127.0.0.1:9/traffic: ConnectError" in closed.output
    both = runner.invoke(app, ["recommend", "--trace", "a.csv", "--recording", "b"])
    assert both.exit_code == 2 and "choose one of --from, --recording and --trace" in both.output


def test_recommend_from_a_running_endpoint(registry_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's 'done when': requests to a real server, then `recommend --from URL` prints a
    per-experiment table and a recommendation and writes the plot (the token from HYBRID_API_TOKEN)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    auth = {"Authorization": "Bearer tok-123"}
    with live_server(create_app(make_path(registry_file, api_token="tok-123"))) as url, \
            httpx.Client(base_url=url, timeout=60, headers=auth) as http:
        for experiment in ("fe", "fe", "fe-2", "fe", "fe-2"):
            assert http.post(f"/predict/{experiment}", json={"inputs": "hi"}).status_code == 200
            time.sleep(0.05)
        runner = CliRunner()
        refused = runner.invoke(app, ["recommend", "--from", url])
        assert refused.exit_code == 2 and "HTTP 401: missing or wrong bearer token" in refused.output
        monkeypatch.setenv("HYBRID_API_TOKEN", "tok-123")
        plot = tmp_path / "recommend.png"
        result = runner.invoke(app, ["recommend", "--from", url, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Traffic: 5 requests of 2 experiment(s)" in out and f"Source:  {url}/traffic" in out
    assert "\nfe " in out and "\nfe-2 " in out and "Recommendation:" in out
    assert "spans only" in out and "fewer than 20 requests" in out
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    assert plot.exists()


def test_recommend_never_sends_the_token_in_clear_text_across_a_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_API_TOKEN", "tok-123")
    runner = CliRunner()
    for url in ("http://203.0.113.7:8000", "http://example.invalid"):
        result = runner.invoke(app, ["recommend", "--from", url])
        assert result.exit_code == 2 and "clear text" in result.output and "https://" in result.output
    assert "not an http(s) URL" in runner.invoke(app, ["recommend", "--from", "ftp://x"]).output

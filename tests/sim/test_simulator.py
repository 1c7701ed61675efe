"""The keep-warm simulator: hand-computed cases, the oracle bound, core's own policy, trace readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.cli import app
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.hybrid import HybridParams, fixed_window, hybrid_policy, hybrid_window
from core.keepwarm.policies import PolicySpecError

from core.sim.simulator import (Oracle, OracleDistance, SimResult, percentile, simulate_minute_trace, simulate_minutes,
                                simulate_requests)
from core.sim.specs import parse_policy
from core.sim.traces import MinuteSeries, Request, TraceError, TraceFormat, detect_format, read_minute_series, read_requests
from tests.conftest import SHARED_2019, SHARED_LLM, make_settings


def functions_trace(path: Path, rows: dict[str, dict[int, int]], minutes: int) -> Path:
    header = ["HashFunction", "HashApp", "HashOwner"] + [f"minute_{m}" for m in range(1, minutes + 1)]
    lines = [",".join(header)]
    for name, counts in rows.items():
        lines.append(",".join([name, "app", "owner"] + [str(counts.get(m, 0)) for m in range(1, minutes + 1)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def series(minutes: dict[int, int], name: str = "f") -> MinuteSeries:
    return MinuteSeries(name, sorted(minutes.items()))


def fixed(seconds: int) -> NamedPolicy:
    return NamedPolicy(f"fixed:{seconds}", fixed_window(seconds))


def hybrid(base_s: int, extension_s: int, activity_window_s: int) -> NamedPolicy:
    return NamedPolicy("hybrid", hybrid_policy(HybridParams(base_s, extension_s, activity_window_s)))


# --- minute mode, by hand ---------------------------------------------------------------------------
def test_fixed_window_by_hand() -> None:
    # minutes 1, 5, 20 of 30; W = 10: cold; gap 4 bridged (idle 3); gap 15 cold (idle 10); tail min(10, 10)
    out = simulate_minutes(series({1: 1, 5: 2, 20: 1}), fixed(600), trace_minutes=30)
    assert (out.invocations, out.cold_starts, out.idle_minutes) == (4, 2, 23)


def test_window_edge_gap_equal_to_the_window_stays_warm() -> None:
    assert simulate_minutes(series({1: 1, 11: 1}), fixed(600), 11).cold_starts == 1  # g = 10 = W
    edge = simulate_minutes(series({1: 1, 12: 1}), fixed(600), 12)  # g = 11 > W
    assert (edge.cold_starts, edge.idle_minutes) == (2, 10)


def test_last_request_of_the_day_idles_only_until_the_trace_ends() -> None:
    out = simulate_minutes(series({28: 1}), fixed(600), trace_minutes=30)
    assert (out.cold_starts, out.idle_minutes) == (1, 2)
    assert out.after_end_minutes == 8  # the rest of its 10-minute window, reported apart


def test_hybrid_by_hand() -> None:
    # base 10 min, +10 min when another request came within 5 min before the latest.
    out = simulate_minutes(series({1: 1, 3: 1, 30: 2, 60: 1}), hybrid(600, 600, 300), trace_minutes=65)
    # m1 isolated W10: g2 bridged (1) | m3 recent (2 min) W20: g27 cold (20) |
    # m30 two in the minute W20: g30 cold (20) | m60 isolated W10: tail min(10, 5) = 5
    assert (out.cold_starts, out.idle_minutes) == (3, 46)


def test_the_shared_2019_sample_matches_the_published_check() -> None:
    results, _ = simulate_minute_trace(read_minute_series(SHARED_2019, TraceFormat.AZURE_FUNCTIONS_2019),
                                       [fixed(600)], 1440)
    summary = results["fixed:600"].summary()
    assert (summary["invocations"], summary["cold_starts"], summary["idle_container_minutes"]) == (6_236_609, 4_319, 121_109)


# --- the oracle -------------------------------------------------------------------------------------
def test_oracle_bridges_the_shortest_gaps_first() -> None:
    oracle = Oracle()
    oracle.add(series({1: 1, 5: 1, 20: 1}, "a"))  # gaps cost 3 and 14
    oracle.add(series({1: 1, 3: 1}, "b"))  # gap costs 1
    assert [oracle.cold_starts(b) for b in (0, 1, 3, 4, 17, 18)] == [5, 4, 4, 3, 3, 2]
    result = oracle.result("oracle", 4)
    assert (result.cold_starts, result.idle_container_minutes) == (3, 4)


def test_p75_per_experiment_cold_start_rate_on_a_hand_made_population() -> None:
    """Each experiment's own rate, then the 75th percentile by linear interpolation (numpy's default)."""
    result = SimResult("p")
    for invocations, cold in ((10, 0), (10, 1), (4, 1), (2, 1)):  # 0 %, 10 %, 25 %, 50 %
        result.add_experiment(invocations, cold, 0.0)
    assert result.experiment_cold_pct == [0.0, 10.0, 25.0, 50.0]
    assert result.p75_experiment_cold_pct == 31.25  # position 0.75 · 3 = 2.25: 25 + 0.25 · (50 − 25)
    assert result.summary()["p75_experiment_cold_start_pct"] == 31.25
    assert (result.cold_starts, round(100 * result.cold_starts / result.invocations, 4)) == (3, 11.5385)  # the total tells another story
    assert percentile([40.0, 0.0, 20.0, 100.0, 60.0], 75) == 60.0 and percentile([], 75) == 0.0


def test_the_oracle_at_a_budget_gives_each_experiment_its_cold_starts_and_a_policy_its_distance() -> None:
    oracle = Oracle()
    oracle.add(series({1: 1, 5: 1, 20: 1}, "a"))  # gaps cost 3 and 14
    oracle.add(series({1: 1, 3: 1}, "b"))  # gap costs 1
    bound = oracle.result("oracle", 4)  # bridges b's gap and a's first: a 2 cold of 3, b 1 of 2
    assert bound.experiment_cold_pct == pytest.approx([200 / 3, 50.0])
    assert bound.p75_experiment_cold_pct == pytest.approx(50 + 0.75 * (200 / 3 - 50))
    everything = 100 / 3 + 0.75 * (50 - 100 / 3)  # all gaps bridged: a 1 cold of 3, b 1 of 2
    assert oracle.p75_curve([0, 4, 18]) == [(0, 100.0), (4, bound.p75_experiment_cold_pct), (18, pytest.approx(everything))]
    policy = SimResult("p", idle_container_minutes=4.0)
    policy.add_experiment(3, 3, 0.0)
    policy.add_experiment(2, 1, 0.0)
    distance = OracleDistance.of(policy, oracle)
    assert distance.cold_starts == pytest.approx(4 / 3)
    assert distance.p75 == pytest.approx((50 + 0.75 * 50) / bound.p75_experiment_cold_pct)
    perfect = Oracle()
    perfect.add(series({1: 1}, "once"))
    once = SimResult("p", idle_container_minutes=0.0)
    once.add_experiment(1, 1, 0.0)
    assert OracleDistance.of(once, perfect) == OracleDistance(1.0, 1.0)


minute_maps = st.dictionaries(st.integers(1, 200), st.integers(1, 3), min_size=1, max_size=30)


@given(
    experiments=st.lists(minute_maps, min_size=1, max_size=5),
    window_min=st.integers(1, 60),
    hybrid_minutes=st.tuples(st.integers(1, 30), st.integers(0, 30), st.integers(1, 10)),
)
@hsettings(max_examples=60, deadline=None)
def test_oracle_is_never_worse_than_a_policy_at_its_idle_budget(experiments, window_min, hybrid_minutes) -> None:
    base, ext, window = hybrid_minutes
    policies = [fixed(window_min * 60), hybrid(base * 60, ext * 60, window * 60)]
    results, oracle = simulate_minute_trace((series(m, f"e{i}") for i, m in enumerate(experiments)), policies, 200)
    for result in results.values():
        assert oracle.cold_starts(result.idle_container_minutes) <= result.cold_starts
        assert oracle.result("o", result.idle_container_minutes).cold_starts <= result.cold_starts


# --- same decisions as the servers ----------------------------------------------------------------------
def test_the_hybrid_policy_is_cores_function() -> None:
    named = parse_policy("hybrid:conservative", make_settings())
    tracker = ActivityTracker(300, clock=lambda: 0.0)
    for t in (0.0, 100.0, 1000.0, 1250.0):  # isolated, recent, isolated, recent
        activity = tracker.record_request("e", at=t)
        assert named.decide(activity) == hybrid_window(activity, HybridParams(600, 600, 300))


def test_fine_mode_decisions_are_cores_decisions_on_a_real_tracker() -> None:
    params = HybridParams(900, 900, 300)
    seen = []

    def recording(activity):  # type: ignore[no-untyped-def]
        decision = hybrid_window(activity, params)
        seen.append(decision.window_s)
        return decision

    times = [0, 100, 1000, 1200, 5000]
    simulate_requests((Request(t, "e", 1.0) for t in times), NamedPolicy("hybrid", recording), max_containers=2)
    tracker = ActivityTracker(300, clock=lambda: 0.0)
    expected = [hybrid_window(tracker.record_request("e", at=t), params).window_s for t in times]
    assert seen == expected == [900, 1800, 900, 1800, 900]


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 40.0, 700.0, 9000.0, 8 * 24 * 3600.0]), st.sampled_from("abc")),
                min_size=1, max_size=40))
def test_fine_mode_activity_is_the_servers_trackers_forgetting_included(steps: list[tuple[float, str]]) -> None:
    """The replay keeps the experiment records itself (no lock, no order of use): every request's
    activity, which its decision is made from, is the one a real tracker gives — with a learning
    policy, and gaps past the tracker's 7-day retention (an experiment forgotten there starts again)."""
    from core.sim.simulator import RETENTION_S

    adaptive = parse_policy("adaptive", make_settings())
    seen = []

    def recording(activity):  # type: ignore[no-untyped-def]
        seen.append(activity)
        return adaptive.decide(activity)

    t, requests = 0.0, []
    for gap, experiment in steps:
        t += gap
        requests.append(Request(t, experiment, 1.0))
    simulate_requests(iter(requests), NamedPolicy("adaptive", recording, adaptive.learner), max_containers=40)
    tracker = ActivityTracker(300, retention_s=RETENTION_S, clock=lambda: 0.0, learner=adaptive.learner)
    expected = []
    # each request runs 1 s (below the cap: none waits); a completion at the time of an arrival comes first
    events = sorted([(r.time_s, 1, r.experiment_id) for r in requests] + [(r.time_s + 1.0, 0, r.experiment_id) for r in requests],
                    key=lambda event: event[:2])  # stable: arrivals at one time in the trace's order
    for at, arrival, experiment_id in events:
        if arrival:
            expected.append(tracker.record_request(experiment_id, at=at))
        else:
            tracker.record_completion(experiment_id, at=at)
    assert seen == expected  # every field: times, counts, requests in flight, what was learned, the width


def test_fine_mode_by_hand() -> None:
    requests = [Request(0, "e", 1), Request(30, "e", 1), Request(100, "e", 1)]
    out = simulate_requests(iter(requests), fixed(60), max_containers=1)
    # t0 cold (busy until 1) | t30 warm, idle 29 | t100: idle 69 > 60 → scaled down after 60 idle, cold
    assert (out.cold_starts, round(out.idle_container_minutes * 60, 6)) == (2, 89.0)
    # the trace ends with the last request (t100, busy until 101): its whole 60 s window lies after the end
    assert round(out.idle_after_end_minutes * 60, 6) == 60.0 and out.summary()["idle_after_end_minutes"] == 1.0


def test_fine_mode_reports_the_windows_open_at_the_end_of_the_trace_for_every_container() -> None:
    """Two containers left by a burst, the trace's last request 30 s later: the windows (600 s) of both
    run past the end — what `hybrid` and `fixed:60` differ by on a short trace."""
    requests = [Request(0, "e", 10), Request(1, "e", 10), Request(40, "e", 1)]
    short, long = (simulate_requests(iter(requests), fixed(w), max_containers=2) for w in (60, 600))
    # A: busy 0..10; B: busy 1..11, idle 11..40 (29), takes t40 (the most recently used), busy to 41; the
    # trace ends at 40: A idles 10..40 (30) inside it — the same 59 s for both windows
    assert round(short.idle_container_minutes * 60, 6) == round(long.idle_container_minutes * 60, 6) == 59.0
    assert round(short.idle_after_end_minutes * 60, 6) == (60 - 30) + 60  # A's rest, B's whole window
    assert round(long.idle_after_end_minutes * 60, 6) == (600 - 30) + 600


def test_fine_mode_queues_at_the_container_limit_and_scales_out_below_it() -> None:
    burst = [Request(0, "e", 10), Request(1, "e", 10), Request(2, "e", 10)]
    assert simulate_requests(iter(burst), fixed(60), max_containers=1).cold_starts == 1
    assert simulate_requests(iter(burst), fixed(60), max_containers=3).cold_starts == 3


def always(decision: WindowDecision, learner=None) -> NamedPolicy:  # type: ignore[no-untyped-def]
    return NamedPolicy("always", lambda activity: decision, learner)


def test_fine_mode_two_windows_by_hand() -> None:
    """Extra containers go after the burst window, the last one after the window; their idle apart."""
    two = always(WindowDecision(600, WindowReason.LEARNED, "", burst_window_s=60))
    requests = [Request(0, "e", 10), Request(1, "e", 10), Request(200, "e", 1)]
    out = simulate_requests(iter(requests), two, max_containers=2)
    # A busy 0..10, B (cold) 1..11; at 200 A, idle since 10, went at 70 (60 s, burst); B, the last one,
    # takes the request (idle 189 s); B's window runs past the end
    assert out.cold_starts == 2
    assert round(out.idle_container_minutes * 60, 6) == 249.0 and round(out.burst_idle_minutes * 60, 6) == 60.0
    assert out.summary()["last_container_idle_minutes"] == round(189 / 60, 3)
    assert round(out.idle_after_end_minutes * 60, 6) == 600.0
    named = simulate_requests(iter(requests), parse_policy("fixed:600:60", make_settings()), max_containers=2)
    assert named.summary() | {"policy": "always"} == out.summary()  # `--policy fixed:600:60` names the same plan
    one = simulate_requests(iter(requests), fixed(600), max_containers=2)
    assert one.cold_starts == 2 and round(one.burst_idle_minutes * 60, 6) == 190.0  # one window: A stays, idle


def test_fine_mode_prewarm_plans_by_hand() -> None:
    """Timed from the latest arrival: the pool is held the minute after it, goes, and comes back at the
    pre-warm (`prewarm_after_s` after the arrival) for the keep time; a request before it is cold."""
    prewarm = always(WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=300))
    on_time = simulate_requests(iter([Request(0, "e", 1), Request(30, "e", 1), Request(400, "e", 1)]), prewarm, 2)
    # 30: inside the spell, warm (idle 29); the container goes at 91 (the spell's minute after 30 and its
    # own after 31: idle 60); the pre-warm at 330 is taken at 400 (idle 70)
    assert on_time.cold_starts == 1 and round(on_time.idle_container_minutes * 60, 6) == 29 + 60 + 70
    # after the end: the last container's minute, then the next pre-warm, 700..820
    assert round(on_time.idle_after_end_minutes * 60, 6) == 60 + 120
    early = simulate_requests(iter([Request(0, "e", 1), Request(30, "e", 1), Request(200, "e", 1)]), prewarm, 2)
    assert early.cold_starts == 2  # due at 330: at 200 nothing is warm
    late = simulate_requests(iter([Request(0, "e", 1), Request(30, "e", 1), Request(500, "e", 1)]), prewarm, 2)
    assert late.cold_starts == 2  # the pre-warm ran 330..450 unused (idle 120) and went
    assert round(late.idle_container_minutes * 60, 6) == 29 + 60 + 120


def test_fine_mode_a_request_that_meets_a_prewarm_still_starting_is_cold() -> None:
    """A pre-warm started `lead` before the request is due is ready when it comes: the lead covers the
    measured cold start, however short the configured lead (as on the servers). A request that comes
    early, while that start is under way, waits for the rest of it — cold, as the servers report it
    (though shorter than its own would have been)."""
    prewarm = always(WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=300))
    on_time = [Request(0, "e", 1), Request(300, "e", 1)]
    covered = simulate_requests(iter(on_time), prewarm, 2, cold_start_s=30)  # lead: the cold start
    short = simulate_requests(iter(on_time), prewarm, 2, cold_start_s=30, prewarm_lead_s=10)
    early = simulate_requests(iter([Request(0, "e", 1), Request(285, "e", 1)]), prewarm, 2, cold_start_s=30)
    assert (covered.cold_starts, short.cold_starts, early.cold_starts) == (1, 1, 2)
    # the first container held through the spell's minute (31 → 91 s), the pre-warm's from its start (270 → 285 s)
    assert early.idle_container_minutes == pytest.approx((60 + 15) / 60)


def test_fine_mode_prewarms_the_experiments_width() -> None:
    """A burst of three, each on its own container: the pre-warm brings three back (the width its
    tracker measured), so the next burst finds them all warm."""
    prewarm = always(WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=300),
                     adaptive_policy(AdaptiveParams(concurrent_inputs=1)).learner)
    burst = [Request(t, "e", 10) for t in (0.0, 0.1, 0.2)] + [Request(t, "e", 10) for t in (310.0, 310.1, 310.2)]
    out = simulate_requests(iter(burst), prewarm, max_containers=5)
    assert out.cold_starts == 3
    narrow = simulate_requests(iter(burst), always(WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=300)),
                               max_containers=5)
    assert narrow.cold_starts == 5  # no width known (no learner): one container comes back


def test_fine_mode_containers_take_several_requests_at_once() -> None:
    burst = [Request(t, "e", 10) for t in (0.0, 0.1, 0.2)]
    assert simulate_requests(iter(burst), fixed(60), max_containers=5, concurrent_inputs=2).cold_starts == 2
    assert simulate_requests(iter(burst), fixed(60), max_containers=5, concurrent_inputs=3).cold_starts == 1
    assert simulate_requests(iter(burst), fixed(60), max_containers=5).cold_starts == 3
    # at the cap, full: the request waits for the first slot (warm, queued)
    assert simulate_requests(iter(burst), fixed(60), max_containers=1, concurrent_inputs=2).cold_starts == 1


def test_fine_mode_tells_its_progress_in_steps_that_add_up_to_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.sim import simulator

    monkeypatch.setattr(simulator, "PROGRESS_EVERY", 4)
    told: list[int] = []
    simulate_requests((Request(t, "e", 1.0) for t in range(10)), fixed(60), max_containers=1, progress=told.append)
    assert told == [4, 4, 2]


# --- trace readers --------------------------------------------------------------------------------------
def test_the_2019_minutes_sorted_at_once_or_merged_give_the_same_requests(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A minute's requests are sorted at once up to SORTED_MINUTE_MAX, merged function by function above
    it (bounded memory): the same requests in the same time order either way."""
    from core.sim import traces

    trace = functions_trace(tmp_path / "f.csv", {"a": {1: 3, 2: 7}, "b": {1: 5, 3: 1}, "c": {2: 7, 3: 2}}, 3)
    sorted_at_once = list(read_requests(trace, TraceFormat.AZURE_FUNCTIONS_2019))
    monkeypatch.setattr(traces, "SORTED_MINUTE_MAX", 4)  # minutes 1 and 2 merged, minute 3 sorted
    merged = list(read_requests(trace, TraceFormat.AZURE_FUNCTIONS_2019))
    assert merged == sorted_at_once and len(merged) == 25
    assert [r.time_s for r in merged] == sorted(r.time_s for r in merged)
    assert [(r.experiment_id, r.time_s) for r in merged[:3]] == [("b", 6.0), ("a", 10.0), ("b", 18.0)]


def test_formats_are_detected(tmp_path: Path) -> None:
    assert detect_format(functions_trace(tmp_path / "f.csv", {"a": {1: 1}}, 3)) is TraceFormat.AZURE_FUNCTIONS_2019
    (tmp_path / "llm.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n")
    assert detect_format(tmp_path / "llm.csv") is TraceFormat.AZURE_LLM_2023
    (tmp_path / "c.csv").write_text("timestamp,experiment_id\n0,a\n")
    assert detect_format(tmp_path / "c.csv") is TraceFormat.CSV


@pytest.mark.parametrize(("content", "line", "reason"), [
    ("HashFunction,HashApp,HashOwner,minute_1,minute_2\nf,a,o,1\n", 2, "4 columns, the header has 5"),
    ("HashFunction,HashApp,HashOwner,minute_1,minute_2\nf,a,o,1,x\n", 2, "'x' is not an integer"),
    ("HashFunction,HashApp,HashOwner,minute_1\nf,a,o,1\ng,a,o,-2\n", 3, "negative"),
    ("timestamp,experiment_id\n10,a\n5,b\n", 3, "increasing order"),
    ("timestamp,experiment_id\nyesterday,a\n", 2, "neither seconds nor ISO"),
    ("timestamp,experiment_id\n1,\n", 2, "empty experiment_id"),
    ("timestamp,experiment_id,duration_ms\n1,a,slow\n", 2, "duration_ms"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,10\n", 2, "expected 3 columns"),
    ("when,who\n1,a\n", 1, "unknown header"),
])
def test_malformed_traces_name_file_line_and_reason(tmp_path: Path, content: str, line: int, reason: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(content)
    with pytest.raises(TraceError) as err:
        fmt = detect_format(path)
        list(read_minute_series(path, fmt)) if fmt is TraceFormat.AZURE_FUNCTIONS_2019 else list(read_requests(path, fmt))
    assert err.value.line == line and reason in str(err.value) and str(path) in str(err.value)


def test_request_traces_bin_into_minutes(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("timestamp,experiment_id\n100,a\n130,a\n161,b\n400,a\n")
    got = {s.experiment_id: s.minutes for s in read_minute_series(path, TraceFormat.CSV)}
    assert got == {"a": [(1, 2), (6, 1)], "b": [(2, 1)]}


def test_2019_minutes_spread_evenly_in_fine_mode(tmp_path: Path) -> None:
    path = functions_trace(tmp_path / "f.csv", {"a": {1: 2}, "b": {1: 1}}, 2)
    assert [(r.time_s, r.experiment_id) for r in read_requests(path, TraceFormat.AZURE_FUNCTIONS_2019)] == [
        (15.0, "a"), (30.0, "b"), (45.0, "a")]


# --- the command ---------------------------------------------------------------------------------------
def test_simulate_json_on_the_shared_trace(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--trace", str(SHARED_2019), "--policy", "fixed:600",
                                      "--policy", "hybrid", "--policy", "oracle", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {r["policy"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"fixed:600", "hybrid", "oracle@fixed:600", "oracle@hybrid"}
    for row in rows.values():
        assert {"policy", "invocations", "cold_starts", "cold_start_pct", "p75_experiment_cold_start_pct",
                "idle_container_minutes", "idle_x_fixed_10min"} <= set(row)
    assert (rows["fixed:600"]["cold_starts"], rows["fixed:600"]["idle_container_minutes"]) == (4319, 121109)
    # each policy against the oracle at its own idle budget, on both measures; idle in the paper's unit
    fixed = rows["fixed:600"]
    assert fixed["cold_starts_x_oracle"] == round(4319 / rows["oracle@fixed:600"]["cold_starts"], 4) == 2.2251
    assert fixed["p75_x_oracle"] == round(fixed["p75_experiment_cold_start_pct"] / rows["oracle@fixed:600"]["p75_experiment_cold_start_pct"], 4)
    assert (fixed["idle_x_fixed_10min"], rows["hybrid"]["idle_x_fixed_10min"]) == (1.0, round(162_234 / 121_109, 4))
    assert "cold_starts_x_oracle" not in rows["oracle@hybrid"]
    assert rows["oracle@hybrid"]["cold_starts"] < rows["hybrid"]["cold_starts"]
    assert rows["oracle@hybrid"]["idle_container_minutes"] <= rows["hybrid"]["idle_container_minutes"]
    assert (tmp_path / "simulation.json").exists() and "| fixed:600 |" in (tmp_path / "simulation.md").read_text()


def test_simulate_sweep_writes_the_pareto_plot(tmp_path: Path) -> None:
    trace = functions_trace(tmp_path / "f.csv", {"a": {1: 1, 9: 1, 50: 3, 300: 1}, "b": {2: 1, 3: 1}}, 400)
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--sweep", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "out" / "simulation.json").read_text())
    policies = [r["policy"] for r in rows]
    assert "fixed:60" in policies and "fixed:14400" in policies and "hybrid:performance" in policies
    assert "histogram" in policies and [p for p in policies if p.startswith("adaptive:")] == [
        "adaptive:10", "adaptive:20", "adaptive:40", "adaptive:80", "adaptive:160", "adaptive:320", "adaptive:640"]
    assert all({"cold_starts_x_oracle", "p75_x_oracle", "idle_x_fixed_10min"} <= set(r) for r in rows if "@" not in r["policy"])
    table = (tmp_path / "out" / "simulation.md").read_text()
    assert "| cold_starts_x_oracle | p75_x_oracle | idle_x_fixed_10min |" in table


def test_simulate_fine_mode_on_the_llm_trace(tmp_path: Path) -> None:
    rows = {}
    for inputs in ("1", "32"):  # one request a container, or MODAL_CONCURRENT_INPUTS' default
        result = CliRunner().invoke(app, ["simulate", "--trace", str(SHARED_LLM), "--mode", "fine", "--policy", "fixed:60",
                                          "--json", "--out", str(tmp_path), "--concurrent-inputs", inputs])
        assert result.exit_code == 0, result.output
        rows[inputs] = json.loads(result.stdout)[0]
        assert rows[inputs]["invocations"] == 19_366 and rows[inputs]["cold_starts"] >= 1
    # ten containers' 1-minute windows still open when the trace ends: said, not silently dropped
    assert rows["1"]["idle_after_end_minutes"] == pytest.approx(10.0, abs=1.0)
    assert "idle_after_end_minutes" in (tmp_path / "simulation.md").read_text()
    # containers taking 32 requests at once: one is left at the end, not ten (the one-request containers
    # are all busy, queueing, the whole trace: they idle under a minute in all)
    assert rows["32"]["idle_after_end_minutes"] == pytest.approx(1.0, abs=0.1)
    assert rows["1"]["idle_container_minutes"] < 1 < rows["32"]["idle_container_minutes"]
    for row in rows.values():  # the two kinds of idle time, apart: they add up
        assert row["burst_idle_minutes"] + row["last_container_idle_minutes"] == pytest.approx(
            row["idle_container_minutes"], abs=0.01)


def test_fine_mode_prints_the_burst_and_the_last_containers_idle_apart(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"  # bursts of three (one request a container) every 10 minutes, 30 s each
    trace.write_text("timestamp,experiment_id,duration_ms\n" + "".join(
        f"{start + i},e,30000\n" for start in range(0, 6000, 600) for i in range(3)))
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--mode", "fine", "--policy", "fixed:600",
                                      "--policy", "fixed:600:60", "--concurrent-inputs", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    header = lines.index(next(line for line in lines if line.startswith("policy") and "burst idle (ctr-min)" in line))
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 2:header + 4]}
    # one window: between two bursts the extra containers idle from 31 and 30 s to 601 and 602 s (the most
    # recently used is taken first); two windows: a minute each (the last burst's still busy at the end)
    assert rows["fixed:600"][0] == f"{9 * (570 + 572) / 60:,.2f}" and rows["fixed:600:60"][0] == f"{9 * 2 * 60 / 60:,.2f}"
    assert rows["fixed:600"][1] == rows["fixed:600:60"][1]  # the last container's idle is the same
    assert "last_container_idle_minutes" in (tmp_path / "o" / "simulation.md").read_text()


def test_simulate_prints_a_table_a_person_reads_at_100_columns_and_says_what_is_degenerate(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--trace", str(SHARED_LLM), "--policy", "hybrid", "--policy", "fixed:60",
                                      "--policy", "oracle", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    header = next(line for line in lines if line.startswith("policy  "))
    for unit in ("cold (%)", "p75 cold (%)", "idle (ctr-min)", "after end (ctr-min)", "idle ($)"):
        assert unit in header
    assert "cold starts (× oracle)" in result.stdout
    words = " ".join(lines)
    assert "Every policy gives the same cold starts on this trace" in words
    assert "No container idles within the trace's span" in words


def test_a_trace_whose_gaps_tell_the_policies_apart_gets_no_such_note(tmp_path: Path) -> None:
    trace = functions_trace(tmp_path / "f.csv", {"a": {1: 1, 9: 1, 50: 3, 300: 1}, "b": {2: 1, 3: 1}}, 400)
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "fixed:60", "--policy", "fixed:3600",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "Note:" not in result.stdout and "fixed:3600" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "fixed:abc"], "whole seconds"),
    (["--policy", "fixed:60:120"], "between 1 and the window"),
    (["--policy", "fixed:600:x"], "fixed:600:60"),
    (["--policy", "hybrid:turbo"], "unknown preset"),
    (["--policy", "lru"], "expected fixed:SECONDS"),
    (["--mode", "fine", "--policy", "oracle"], "minute mode"),
    (["--format", "parquet"], "choose one of"),
])
def test_simulate_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    trace = functions_trace(tmp_path / "f.csv", {"a": {1: 1}}, 3)
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output


def test_policy_spec_errors() -> None:
    with pytest.raises(PolicySpecError):
        parse_policy("fixed:0", make_settings())


def test_the_event_log_exports_a_replayable_trace(tmp_path: Path) -> None:
    from core.events import EventLog, EventName

    log = EventLog(tmp_path / "events.jsonl")
    for experiment in ("a", "b", "a"):
        log.write(experiment, EventName.REQUEST, 900, "isolated")
    log.write("a", EventName.SCALE_TO_ZERO, 900, "idle")
    result = CliRunner().invoke(app, ["export-requests", "--events", str(tmp_path / "events.jsonl")])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "timestamp,experiment_id" and [l.split(",")[1] for l in lines[1:]] == ["a", "b", "a"]
    trace = tmp_path / "requests.csv"
    trace.write_text(result.stdout)
    replay = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "fixed:600", "--json", "--out", str(tmp_path)])
    assert replay.exit_code == 0 and json.loads(replay.stdout)[0]["invocations"] == 3


def test_fine_mode_prices_each_experiments_plans_by_the_cold_start_it_measured() -> None:
    """The same idle times (3 min to over 3 h, a request of 1 s after each), its containers starting in
    2 s or in 2 minutes: the record measures the start at the first request, as a server's does, and
    the slow one is kept longer — fewer cold starts for more idle — than the fast one."""
    gaps = [m * 60.0 for m in (3, 6, 10, 15, 22, 30, 40, 55, 75, 100, 140, 200)] * 6
    times = [sum(gaps[:i]) for i in range(len(gaps) + 1)]
    policy = adaptive_policy(AdaptiveParams(kappa=40, prewarm_evidence=10**6))
    fast, slow = (simulate_requests(iter([Request(t, "e", 1.0) for t in times]), policy, 2, cold_start_s=c)
                  for c in (2.0, 120.0))
    assert slow.cold_starts < fast.cold_starts
    assert slow.idle_container_minutes > fast.idle_container_minutes


def test_fine_mode_prices_a_warm_schedule_as_the_servers_apply_it() -> None:
    """Daily 09:00–10:00 (the trace starts a Monday 00:00 UTC), a 60 s window, requests at 00:00 and
    09:30: the schedule starts a container at 09:00 (idle 30 min until the request takes it warm) and
    holds it to 10:00 (29 min 59 s after the trace's end); without it, the second request is cold."""
    from core.keepwarm.warm_schedule import WarmWindow
    from core.sim.warm_spans import DEFAULT_TRACE_START, WarmSpans

    requests = [Request(0.0, "e", 1.0), Request(34200.0, "e", 1.0)]
    office = WarmSpans((WarmWindow(days="daily", hours="09:00-10:00"),), DEFAULT_TRACE_START.timestamp())
    plain = simulate_requests(iter(requests), always(WindowDecision(60, WindowReason.FIXED, "")), 5)
    warm = simulate_requests(iter(requests), always(WindowDecision(60, WindowReason.FIXED, "")), 5, warm=office)
    assert (plain.cold_starts, plain.idle_container_minutes) == (2, 1.0)
    assert (warm.cold_starts, warm.idle_container_minutes) == (1, 31.0)
    assert warm.summary(0.0)["idle_after_end_minutes"] == pytest.approx(1799 / 60, abs=0.01)
    # led 120 s (a cold start's time): opened at 08:58; a Saturday-only schedule does nothing on this Monday
    early = WarmSpans((WarmWindow(days="daily", hours="09:00-10:00"),), DEFAULT_TRACE_START.timestamp(), lead_s=120)
    assert simulate_requests(iter(requests), always(WindowDecision(60, WindowReason.FIXED, "")), 5, warm=early).idle_container_minutes == 33.0
    saturday = WarmSpans((WarmWindow(days="sat", hours="09:00-10:00"),), DEFAULT_TRACE_START.timestamp())
    assert simulate_requests(iter(requests), always(WindowDecision(60, WindowReason.FIXED, "")), 5, warm=saturday).cold_starts == 2


def test_warm_spans_merge_windows_into_segments_of_the_most_containers() -> None:
    from core.keepwarm.warm_schedule import WarmWindow
    from core.sim.warm_spans import DEFAULT_TRACE_START, WarmSpans

    spans = WarmSpans((WarmWindow(days="mon", hours="09:00-12:00"), WarmWindow(days="mon", hours="11:00-13:00", containers=3),
                       WarmWindow(days="mon", hours="13:00-14:00")), DEFAULT_TRACE_START.timestamp())
    hour = 3600.0
    assert list(zip(spans.starts, spans.ends, spans.containers))[:3] == [(9 * hour, 11 * hour, 1), (11 * hour, 13 * hour, 3),
                                                                         (13 * hour, 14 * hour, 1)]
    assert spans.held_until(10 * hour) == 14 * hour  # adjoining segments hold on
    assert spans.held_until(8 * hour) == 8 * hour and spans.containers_at(12 * hour) == 3
    assert spans.starting(9 * hour, 13 * hour) == [(11 * hour, 3), (13 * hour, 1)]
    assert spans.starts[3] == 9 * hour + 7 * 24 * hour  # the next Monday


def test_simulate_prices_a_warm_schedule_from_the_command_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,experiment_id\n0,e\n34200,e\n")
    runner = CliRunner()
    out = runner.invoke(app, ["simulate", "--trace", str(trace), "--mode", "fine", "--policy", "fixed:60", "--json",
                              "--warm", "daily 09:00-10:00 x1 UTC", "--out", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    row = json.loads(out.stdout)[0]
    assert row["policy"] == "fixed:60 + warm" and row["warm"] == ["daily 09:00-10:00 x1 UTC"] and row["cold_starts"] == 1
    for args, message in [(["--mode", "minute", "--warm", "daily 09:00-10:00"], "fine mode"),
                          (["--mode", "fine", "--warm", "daily 9-10"], "hours '9-10'"),
                          (["--mode", "fine", "--warm", "daily 09:00-10:00", "--trace-start", "yesterday"], "--trace-start")]:
        refused = runner.invoke(app, ["simulate", "--trace", str(trace), *args, "--out", str(tmp_path / "out")])
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_fine_mode_a_warm_schedule_starts_no_more_than_the_experiments_cap() -> None:
    from core.keepwarm.warm_schedule import WarmWindow
    from core.sim.warm_spans import DEFAULT_TRACE_START, WarmSpans

    five = WarmSpans((WarmWindow(days="daily", hours="09:00-10:00", containers=5),), DEFAULT_TRACE_START.timestamp())
    out = simulate_requests(iter([Request(0.0, "e", 1.0), Request(34200.0, "e", 1.0)]),
                            always(WindowDecision(60, WindowReason.FIXED, "")), 2, warm=five)
    # two containers (the cap) from 09:00: one idles until the request takes it at 09:30, the other the whole hour
    assert out.idle_container_minutes == pytest.approx(1 + 30 + 30, abs=0.02) and out.cold_starts == 1

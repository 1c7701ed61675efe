"""The adaptive policy's targets on the shared Azure Functions 2019 sample, pinned (deterministic: a
simulation, not a timing). Only the policies the assertions compare are simulated: the κ sweep, the
balanced preset, the Shahrad et al. policy, and — found by bisection — the fixed windows they bound."""

from __future__ import annotations

from functools import cache

from core.keepwarm.decision import NamedPolicy

from core.sim.simulator import Oracle, OracleDistance, SimResult, simulate_minute_trace
from core.sim.specs import SWEEP_KAPPAS, SWEEP_MINUTES, parse_policy
from core.sim.traces import TraceFormat, read_minute_series
from tests.conftest import SHARED_2019, make_settings


def test_targets_on_the_shared_2019_sample() -> None:
    """At (or under) the balanced preset's idle budget the default adaptive policy needs ≤ 1.1× the
    oracle's cold starts and has ≤ 1.15× its p75 per-experiment cold-start rate (the oracle run at the
    policy's own idle budget); at every point of its κ sweep it has fewer cold starts *and* a lower p75
    than every fixed window of the sweep, and than the Shahrad et al. policy, that idle no more."""
    settings = make_settings()
    series = list(read_minute_series(SHARED_2019, TraceFormat.AZURE_FUNCTIONS_2019))

    def run(*specs: str) -> tuple[dict[str, SimResult], Oracle]:
        policies: list[NamedPolicy] = [parse_policy(s, settings) for s in specs]
        return simulate_minute_trace(series, policies, 1440)

    sweep = [f"adaptive:{k:g}" for k in SWEEP_KAPPAS]
    results, oracle = run(*sweep, "histogram", "hybrid:balanced")
    balanced, shahrad = results["hybrid:balanced"], results["histogram"]

    assert settings.adaptive_kappa == 320 and "adaptive:320" in sweep  # `adaptive` is this point of the sweep
    default = results["adaptive:320"]
    distance = OracleDistance.of(default, oracle)
    assert default.idle_container_minutes <= balanced.idle_container_minutes
    assert distance.cold_starts is not None and distance.cold_starts <= 1.1
    assert distance.p75 is not None and distance.p75 <= 1.15
    assert (default.cold_starts, default.idle_container_minutes, round(default.p75_experiment_cold_pct, 2)) == (1221, 150267, 20.3)
    assert (round(distance.cold_starts, 3), round(distance.p75, 3)) == (0.878, 0.955)
    assert (shahrad.cold_starts, shahrad.idle_container_minutes, round(shahrad.p75_experiment_cold_pct, 2)) == (1417, 186821, 18.18)

    # A longer fixed window idles more, and leaves every experiment as many cold starts or fewer: the
    # fixed window that bounds a point is the longest one whose idle time fits, found by bisection.
    @cache
    def fixed(minutes: int) -> SimResult:
        return run(f"fixed:{minutes * 60}")[0][f"fixed:{minutes * 60}"]

    def longest_fixed_within(idle: float) -> SimResult | None:
        low, high = 0, len(SWEEP_MINUTES)  # invariant: windows below `low` fit, from `high` on they do not
        while low < high:
            middle = (low + high) // 2
            if fixed(SWEEP_MINUTES[middle]).idle_container_minutes <= idle:
                low = middle + 1
            else:
                high = middle
        return fixed(SWEEP_MINUTES[low - 1]) if low else None

    bounded = []
    for spec in sweep:
        point = results[spec]
        rivals = [r for r in (longest_fixed_within(point.idle_container_minutes),) if r is not None]
        rivals += [shahrad] if shahrad.idle_container_minutes <= point.idle_container_minutes else []
        for rival in rivals:
            assert point.cold_starts < rival.cold_starts, (spec, rival.policy)
            assert point.p75_experiment_cold_pct < rival.p75_experiment_cold_pct, (spec, rival.policy)
        bounded.append((spec, [r.policy for r in rivals]))
    assert bounded == [("adaptive:10", []), ("adaptive:20", ["fixed:60"]), ("adaptive:40", ["fixed:120"]),
                       ("adaptive:80", ["fixed:300"]), ("adaptive:160", ["fixed:600"]), ("adaptive:320", ["fixed:900"]),
                       ("adaptive:640", ["fixed:1500"])]

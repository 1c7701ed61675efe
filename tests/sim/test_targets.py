"""The adaptive policy's targets on the shared Azure Functions 2019 sample, pinned (deterministic: a
simulation, not a timing). Only the policies the assertions compare are simulated."""

from __future__ import annotations

from core.keepwarm.decision import NamedPolicy
from core.settings import load_settings
from core.sim.simulator import Oracle, SimResult, simulate_minute_trace
from core.sim.specs import SWEEP_MINUTES, parse_policy
from core.sim.traces import TraceFormat, read_minute_series
from tests.conftest import SHARED_2019


def test_targets_on_the_shared_2019_sample() -> None:
    """The default adaptive policy stays within the balanced preset's idle budget with ≤ 1.3× the
    oracle's cold starts, and beats the best fixed window of no more idle time and the Shahrad et al.
    policy."""
    settings = load_settings(env_file=None)
    series = list(read_minute_series(SHARED_2019, TraceFormat.AZURE_FUNCTIONS_2019))

    def run(*specs: str) -> tuple[dict[str, SimResult], Oracle]:
        policies: list[NamedPolicy] = [parse_policy(s, settings) for s in specs]
        return simulate_minute_trace(series, policies, 1440)

    results, oracle = run("adaptive", "histogram", "hybrid:balanced")
    ours, balanced, shahrad = results["adaptive"], results["hybrid:balanced"], results["histogram"]
    assert ours.idle_container_minutes <= balanced.idle_container_minutes
    assert ours.cold_starts <= 1.3 * oracle.cold_starts(balanced.idle_container_minutes)
    assert ours.cold_starts < shahrad.cold_starts and ours.idle_container_minutes < shahrad.idle_container_minutes

    # A longer fixed window idles more and cold-starts less: the best fixed window within our idle
    # time is the longest one whose idle time fits, found by bisection over the sweep's windows.
    def fixed(minutes: int) -> SimResult:
        return run(f"fixed:{minutes * 60}")[0][f"fixed:{minutes * 60}"]

    low, high = 0, len(SWEEP_MINUTES)  # invariant: windows below `low` fit, from `high` on they do not
    best: SimResult | None = None
    while low < high:
        middle = (low + high) // 2
        result = fixed(SWEEP_MINUTES[middle])
        if result.idle_container_minutes <= ours.idle_container_minutes:
            low, best = middle + 1, result
        else:
            high = middle
    assert best is not None and best.policy == f"fixed:{SWEEP_MINUTES[low - 1] * 60}"
    assert ours.cold_starts < best.cold_starts

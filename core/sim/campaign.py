"""A simulation campaign, as `hybrid-serve simulate` runs it: read the trace, run the policies (and the
oracle), write the reports.

Why this module exists: the CLI function only parses options; this runs the campaign — minute or
fine mode, each policy's distance to the oracle at its own idle budget (total cold starts and p75
per-experiment cold-start rate), its idle time against the fixed 10-minute keep-alive (the unit
Shahrad et al. report in), the oracle entries, the sweep with its two-panel Pareto plot, a warm
schedule priced in fine mode — with a progress bar on standard error, and returns the rows every
output is made from.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.keepwarm.decision import NamedPolicy
from core.keepwarm.policies import PolicySpecError
from core.keepwarm.warm_schedule import WarmWindow
from core.settings import Settings
from core.sim.report import pareto_plot, write_results
from core.sim.simulator import Oracle, OracleDistance, simulate_minute_trace, simulate_requests
from core.sim.specs import ORACLE, PAPER_BASELINE, SWEEP_MINUTES, parse_policy, sweep_specs
from core.sim.warm_spans import DEFAULT_TRACE_START, WarmSpans
from core.sim.traces import (TraceError, TraceFormat, count_minutes, detect_format, read_function_durations,
                             read_minute_series, read_replay)


class UsageError(ValueError):
    pass


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def run(settings: Settings, trace: Path, trace_format: str | None, mode: str, specs: list[str], sweep: bool,
        gpu_price_per_hour: float, out: Path, cold_start_s: float, default_duration_s: float,
        warm: list[str] | None = None, trace_start: str | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    schedule = _warm_spans(warm or [], trace_start, cold_start_s)
    if schedule is not None and mode != "fine":
        raise UsageError("--warm: a warm schedule holds containers; price it in fine mode (--mode fine)")
    try:
        fmt = TraceFormat(trace_format) if trace_format else detect_format(trace)
    except ValueError as exc:
        raise UsageError(str(exc) if isinstance(exc, TraceError) else f"--format {trace_format!r}: choose one of {', '.join(TraceFormat)}") from None
    if mode not in ("minute", "fine"):
        raise UsageError(f"--mode {mode!r}: choose minute or fine")
    specs = specs or ["hybrid", ORACLE]
    want_oracle = ORACLE in specs
    try:
        policies = [parse_policy(s, settings) for s in dict.fromkeys(specs) if s != ORACLE]
        if sweep:
            policies += [parse_policy(s, settings) for s in sweep_specs() if s not in {p.name for p in policies}]
    except PolicySpecError as exc:
        raise UsageError(str(exc)) from None
    try:
        if mode == "minute":
            rows, oracle = _minute(trace, fmt, policies, want_oracle, gpu_price_per_hour, specs, settings)
        else:
            if want_oracle:
                raise UsageError("the oracle is defined for minute mode; use --mode minute")
            rows, oracle = _fine(trace, fmt, policies, settings, cold_start_s, default_duration_s, gpu_price_per_hour,
                                 schedule), None
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    artefacts = write_results(out, rows)
    if sweep and oracle is not None:
        artefacts.append(_sweep_plot(out / "sweep.png", rows, oracle, f"{trace.name} ({mode} mode)"))
    return rows, artefacts


def _sweep_plot(path: Path, rows: list[dict[str, Any]], oracle: Oracle, title: str) -> Path:
    fixed = [r for r in rows if r["policy"].startswith("fixed:") and int(r["policy"][6:]) // 60 in SWEEP_MINUTES]
    fixed.sort(key=lambda r: int(r["policy"][6:]))
    marked = [r for r in rows if r["policy"].startswith(("hybrid", "histogram"))]
    learned = sorted((r for r in rows if r["policy"].startswith("adaptive:")), key=lambda r: float(r["policy"][9:]))
    widest = max(r["idle_container_minutes"] for r in fixed + marked + learned) * 1.05
    budgets = [widest * i / 80 for i in range(81)]
    baseline = next((r["idle_container_minutes"] for r in rows if r["policy"] == PAPER_BASELINE), None)
    return pareto_plot(path, fixed, marked, oracle.curve(), oracle.p75_curve(budgets), title, learned, baseline)


def _minute(trace: Path, fmt: TraceFormat, policies: list[NamedPolicy], want_oracle: bool, price: float,
            specs: list[str], settings: Settings) -> tuple[list[dict[str, Any]], Oracle]:
    minutes = count_minutes(trace, fmt)
    total = sum(1 for _ in trace.open()) - 1 if fmt is TraceFormat.AZURE_FUNCTIONS_2019 else None
    simulated = policies if any(p.name == PAPER_BASELINE for p in policies) else policies + [parse_policy(PAPER_BASELINE, settings)]
    with _progress() as progress:
        task = progress.add_task(f"simulating {len(simulated)} policies", total=total)
        results, oracle = simulate_minute_trace(read_minute_series(trace, fmt), simulated, minutes,
                                                progress=lambda: progress.advance(task))
    baseline_idle = results[PAPER_BASELINE].idle_container_minutes
    rows = []
    for policy in policies:
        result = results[policy.name]
        distance = OracleDistance.of(result, oracle)
        rows.append(result.summary(price) | {
            "cold_starts_x_oracle": _rounded(distance.cold_starts), "p75_x_oracle": _rounded(distance.p75),
            "idle_x_fixed_10min": _rounded(result.idle_container_minutes / baseline_idle if baseline_idle else None),
        })
    if want_oracle:
        for name in [s for s in dict.fromkeys(specs) if s != ORACLE]:
            bound = oracle.result(f"oracle@{name}", results[name].idle_container_minutes)
            rows.append(bound.summary(price) | {
                "idle_x_fixed_10min": _rounded(bound.idle_container_minutes / baseline_idle if baseline_idle else None)})
    return rows, oracle


def _rounded(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio, 4)


def _warm_spans(specs: list[str], trace_start: str | None, lead_s: float) -> WarmSpans | None:
    """The `--warm` windows on the trace's clock (`--trace-start`, default a Monday 00:00 UTC); None: none."""
    try:
        windows = tuple(WarmWindow.parse(spec) for spec in specs)
        start = datetime.fromisoformat(trace_start) if trace_start else DEFAULT_TRACE_START
    except ValidationError as exc:
        raise UsageError("--warm: " + "; ".join(f"{e['loc'][0]}: {e['msg'].removeprefix('Value error, ')}"
                                                for e in exc.errors())) from None
    except ValueError as exc:
        raise UsageError(f"--warm/--trace-start: {exc}") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return WarmSpans(windows, start.timestamp(), lead_s) if windows else None


def _fine(trace: Path, fmt: TraceFormat, policies: list[NamedPolicy], settings: Settings, cold_start_s: float,
          default_duration_s: float, price: float, warm: WarmSpans | None = None) -> list[dict[str, Any]]:
    durations = None
    if fmt is TraceFormat.AZURE_FUNCTIONS_2019:
        sibling = trace.with_name("function_durations.csv")
        durations = read_function_durations(sibling) if sibling.exists() else None
    rows = []
    with _progress() as progress:
        for policy in policies:
            task = progress.add_task(policy.name, total=None)
            result = simulate_requests(
                read_replay(trace, fmt), policy, settings.experiment_max_containers, default_duration_s, cold_start_s,
                durations, settings.activity_window, progress=lambda replayed: progress.advance(task, replayed),
                concurrent_inputs=settings.modal_concurrent_inputs, warm=warm,
            )
            row = result.summary(price)
            if warm is not None:
                row |= {"policy": f"{policy.name} + warm", "warm": [w.describe() for w in warm.windows]}
            rows.append(row)
    return rows

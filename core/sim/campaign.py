"""A simulation campaign, as `hybrid-serve simulate` runs it: read the trace, run the policies (and the
oracle), write the reports.

Why this module exists: the CLI function only parses options; this runs the campaign — minute or
fine mode, the oracle entries at each policy's idle budget, the sweep with its Pareto plot — with a
progress bar on standard error, and returns the rows every output is made from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.keepwarm.decision import NamedPolicy
from core.keepwarm.policies import PolicySpecError
from core.settings import Settings
from core.sim.report import pareto_plot, write_results
from core.sim.simulator import simulate_minute_trace, simulate_requests
from core.sim.specs import ORACLE, SWEEP_MINUTES, parse_policy, sweep_specs
from core.sim.traces import (TraceError, TraceFormat, count_minutes, detect_format, read_function_durations,
                             read_minute_series, read_requests)


class UsageError(ValueError):
    pass


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def run(settings: Settings, trace: Path, trace_format: str | None, mode: str, specs: list[str], sweep: bool,
        gpu_price_per_hour: float, out: Path, cold_start_s: float, default_duration_s: float) -> tuple[list[dict[str, Any]], list[Path]]:
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
            rows, oracle = _minute(trace, fmt, policies, want_oracle, gpu_price_per_hour, specs)
        else:
            if want_oracle:
                raise UsageError("the oracle is defined for minute mode; use --mode minute")
            rows, oracle = _fine(trace, fmt, policies, settings, cold_start_s, default_duration_s, gpu_price_per_hour), None
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    artefacts = write_results(out, rows)
    if sweep and oracle is not None:
        fixed = [r for r in rows if r["policy"].startswith("fixed:") and int(r["policy"][6:]) // 60 in SWEEP_MINUTES]
        fixed.sort(key=lambda r: int(r["policy"][6:]))
        marked = [r for r in rows if r["policy"].startswith(("hybrid", "histogram"))]
        learned = sorted((r for r in rows if r["policy"].startswith("adaptive:")), key=lambda r: float(r["policy"][9:]))
        artefacts.append(pareto_plot(out / "sweep.png", fixed, marked, oracle.curve(), f"{trace.name} ({mode} mode)", learned))
    return rows, artefacts


def _minute(trace: Path, fmt: TraceFormat, policies: list[NamedPolicy], want_oracle: bool, price: float,
            specs: list[str]) -> tuple[list[dict[str, Any]], Any]:
    minutes = count_minutes(trace, fmt)
    total = sum(1 for _ in trace.open()) - 1 if fmt is TraceFormat.AZURE_FUNCTIONS_2019 else None
    with _progress() as progress:
        task = progress.add_task(f"simulating {len(policies)} policies", total=total)
        results, oracle = simulate_minute_trace(read_minute_series(trace, fmt), policies, minutes,
                                                progress=lambda: progress.advance(task))
    rows = [results[p.name].summary(price) for p in policies]
    if want_oracle:
        for name in [s for s in dict.fromkeys(specs) if s != ORACLE]:
            rows.append(oracle.result(f"oracle@{name}", results[name].idle_container_minutes).summary(price))
    return rows, oracle


def _fine(trace: Path, fmt: TraceFormat, policies: list[NamedPolicy], settings: Settings, cold_start_s: float,
          default_duration_s: float, price: float) -> list[dict[str, Any]]:
    durations = None
    if fmt is TraceFormat.AZURE_FUNCTIONS_2019:
        sibling = trace.with_name("function_durations.csv")
        durations = read_function_durations(sibling) if sibling.exists() else None
    rows = []
    with _progress() as progress:
        for policy in policies:
            task = progress.add_task(policy.name, total=None)
            result = simulate_requests(
                read_requests(trace, fmt), policy, settings.max_containers, default_duration_s, cold_start_s,
                durations, settings.activity_window, progress=lambda: progress.advance(task),
            )
            rows.append(result.summary(price))
    return rows

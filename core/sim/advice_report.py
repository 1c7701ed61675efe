"""`hybrid-serve recommend`'s output: tables that fit 100 columns, a unit in every header, and the
trade-off plot.

Why this module exists: the advice (core.sim.recommend) is data; a person reads it in a terminal
and a picture, a program reads `--json`. Keeping the rendering apart keeps the advice testable as
values and the layout testable as text.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from core.settings import Settings
from core.sim.recommend import Advice, Outcome, how_to_set, short_id
from core.sim.report import text_table, wrapped

WIDTH = 100


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def _label(outcome: Outcome, advice: Advice, advised: Outcome | None) -> str:
    marks = [m for m, on in (("now", outcome.spec == advice.current), ("advised", advised is not None and outcome.spec == advised.spec)) if on]
    return outcome.spec + (f" ({', '.join(marks)})" if marks else "")


def render(advice: Advice, settings: Settings, source: str, first_at: float, gpu: str | None,
           per_second: float | None, experiments_shown: int = 30) -> str:
    """The advice as text, no line over 100 columns."""
    when = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    requests = advice.overall[0].requests
    start = f"from {when(first_at)} UTC" if first_at > 86400 * 365 else "times relative to the trace's start"
    out = [f"Traffic: {requests:,} requests of {len(advice.per_experiment)} experiment(s) over "
           f"{_span(advice.span_s)}, {start}",
           f"Source:  {source}",
           f"Price:   {'unknown' if per_second is None else f'${per_second:.6f} per container-second'}"
           f"{f' ({gpu})' if gpu else ''}; per day: the traffic's span scaled to 24 h",
           "", "Every setting, all experiments:"]
    rows = [[_label(o, advice, advice.advised), f"{o.cold_start_pct:.2f}", f"{o.p75_experiment_cold_start_pct:.2f}",
             f"{o.idle_hours_per_day:,.2f}", _money(o.idle_cost_per_day), f"{o.idle_hours_after_end:,.2f}"]
            for o in advice.overall]
    out += text_table(["setting", "cold (%)", "p75 cold (%)", "idle (ctr-h/day)", "idle ($/day)", "after end (ctr-h)"], rows)
    out.append("ctr-h: container-hours; p75 cold: the 75th percentile of the experiments' own cold-start rates; "
               "after end: the windows still open when the traffic ends (paid once)")
    out += ["", "Per experiment (now → advised):"]
    erows = []
    for experiment_id, outcomes in list(advice.per_experiment.items())[:experiments_shown]:
        now, best = outcomes[0], advice.advised_per_experiment[experiment_id]
        erows.append([short_id(experiment_id), f"{now.requests:,}", f"{now.cold_start_pct:.2f}", _money(now.idle_cost_per_day),
                      best.spec if best else "none meets it", f"{best.cold_start_pct:.2f}" if best else "–",
                      _money(best.idle_cost_per_day) if best else "–"])
    out += text_table(["experiment", "requests", "cold (%)", "idle ($/day)", "advised", "cold (%)", "idle ($/day)"], erows)
    hidden = len(advice.per_experiment) - experiments_shown
    if hidden > 0:
        out.append(f"… and {hidden} more experiment(s) (--json lists them all)")
    out.append("A setting applies to the whole endpoint: 'advised' is what each experiment's traffic alone would "
               "choose (the adaptive policy learns each experiment's gaps by itself).")
    out += ["", *_verdict(advice, settings)]
    if advice.notes:
        out += ["", "Note:"] + [f"- {n}" for n in advice.notes]
    return "\n".join(wrapped(line, WIDTH) for line in out)


def _verdict(advice: Advice, settings: Settings) -> list[str]:
    now, best = advice.overall[0], advice.advised
    if best is None:
        return [f"Recommendation: none — {advice.why}. Loosen --max-cold-start-pct or --budget-per-day."]
    if best.spec == now.spec:
        return [f"Recommendation: keep {now.spec} ({advice.why}): cold starts {now.cold_start_pct:.2f} %, "
                f"idle ${_money(now.idle_cost_per_day)}/day."]
    saving = (now.idle_cost_per_day or 0.0) - (best.idle_cost_per_day or 0.0)
    change = f"saves ${saving:,.2f}/day" if saving >= 0.005 else f"costs ${-saving:,.2f}/day more" if saving <= -0.005 else "the same per day"
    tail = now.idle_hours_after_end - best.idle_hours_after_end
    if abs(tail) >= 0.005:
        change += f", and {abs(tail):,.2f} container-hours {'less' if tail > 0 else 'more'} idle after the traffic ends"
    return [f"Recommendation: {best.spec} — {advice.why}: cold starts {best.cold_start_pct:.2f} % "
            f"(now {now.cold_start_pct:.2f} %), idle ${_money(best.idle_cost_per_day)}/day "
            f"(now ${_money(now.idle_cost_per_day)}/day): {change}.",
            f"Set: {how_to_set(best.spec, settings)}"]


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


def tradeoff_plot(path: Path, advice: Advice) -> Path:
    """Cold-start % against idle cost per day for every setting (the current one and the advised one
    marked), all experiments together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    now_spec = advice.overall[0].spec
    cost = lambda o: o.idle_cost_per_day if o.idle_cost_per_day is not None else o.idle_hours_per_day  # noqa: E731
    unit = "idle cost ($/day)" if advice.overall[0].idle_cost_per_day is not None else "idle (container-h/day)"
    fixed = sorted((o for o in advice.overall if o.spec.startswith("fixed:")), key=lambda o: int(o.spec[6:]))
    ax.plot([cost(o) for o in fixed], [o.cold_start_pct for o in fixed], "-o", color="0.6", label="fixed windows")
    for o in fixed:  # labelled on the line; the named settings in the legend (their points often coincide)
        ax.annotate(f"{int(o.spec[6:]) // 60} min", (cost(o), o.cold_start_pct), textcoords="offset points",
                    xytext=(5, 4), fontsize=7, color="0.4")
    markers = iter("sDv^<>pPhX")
    for o in advice.overall:
        if not o.spec.startswith("fixed:") and o.spec != now_spec:
            ax.plot(cost(o), o.cold_start_pct, next(markers, "o"), ms=7, alpha=0.8, label=o.spec)
    now = advice.overall[0]
    ax.plot(cost(now), now.cold_start_pct, "*", ms=16, color="tab:orange", label=f"now: {now.spec}")
    if advice.advised is not None:
        ax.plot(cost(advice.advised), advice.advised.cold_start_pct, "o", ms=14, mfc="none", mew=2, color="tab:green",
                label=f"advised: {advice.advised.spec}")
    ax.set_xlabel(unit)
    ax.set_ylabel("cold starts (% of requests)")
    ax.set_title("Cold starts against idle cost, replayed on your traffic")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Simulation reports: a Markdown table, a JSON file and a Pareto plot (matplotlib).

Why this module exists: the simulator's numbers are only useful when a person can read and compare
them; every run writes the same three artefacts so results can be diffed and pasted into docs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("policy", "invocations", "cold_starts", "cold_start_pct", "p75_experiment_cold_start_pct",
           "idle_container_minutes", "idle_after_end_minutes", "burst_idle_minutes", "last_container_idle_minutes",
           "idle_cost", "cold_starts_x_oracle", "p75_x_oracle",
           "idle_x_fixed_10min")
#: Ratios get three decimals: targets such as "≤ 1.15× the oracle" are read off them.
RATIOS = ("cold_starts_x_oracle", "p75_x_oracle", "idle_x_fixed_10min")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if v is None:
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.3f}" if c in RATIOS else f"{v:,.2f}")
            else:
                cells.append(f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table for a terminal: the first column left-aligned, the numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def _cell(value: Any, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def terminal_report(rows: Sequence[dict[str, Any]], mode: str) -> str:
    """What `simulate` prints: the results within 100 columns, a unit in every header, the ratios to
    the oracle in a table of their own, and in plain words what makes a trace degenerate."""
    out = [f"{rows[0]['invocations']:,} requests replayed ({mode} mode)" if rows else "no policy ran", ""]
    out += text_table(
        ["policy", "cold", "cold (%)", "p75 cold (%)", "idle (ctr-min)", "after end (ctr-min)", "idle ($)"],
        [[str(r["policy"])[:28], _cell(r["cold_starts"]), _cell(r["cold_start_pct"]),
          _cell(r["p75_experiment_cold_start_pct"]), _cell(r["idle_container_minutes"]),
          _cell(r["idle_after_end_minutes"]), _cell(r.get("idle_cost"))] for r in rows])
    out.append("ctr-min: container-minutes; p75 cold: the 75th percentile of the experiments' own cold-start "
               "rates; after end: what the windows still open at the trace's end cost after it")
    split = [r for r in rows if r.get("burst_idle_minutes") is not None]
    if split:
        out += ["", "Idle time by container: the extra (burst) containers' and the pool's last one's:"]
        out += text_table(["policy", "burst idle (ctr-min)", "last container idle (ctr-min)", "burst share (%)"],
                          [[str(r["policy"])[:28], _cell(r["burst_idle_minutes"]), _cell(r["last_container_idle_minutes"]),
                            _cell(100 * r["burst_idle_minutes"] / r["idle_container_minutes"] if r["idle_container_minutes"] else 0.0, 1)]
                           for r in split])
    compared = [r for r in rows if r.get("cold_starts_x_oracle") is not None or r.get("idle_x_fixed_10min") is not None]
    if compared:
        out += ["", "Against the oracle at the same idle budget, and idle against a fixed 10-minute keep-alive:"]
        out += text_table(["policy", "cold starts (× oracle)", "p75 cold (× oracle)", "idle (× fixed 10 min)"],
                          [[str(r["policy"])[:28], _cell(r.get("cold_starts_x_oracle"), 3), _cell(r.get("p75_x_oracle"), 3),
                            _cell(r.get("idle_x_fixed_10min"), 3)] for r in compared])
    notes = plain_notes(rows)
    if notes:
        out += ["", "Note:"] + [f"- {n}" for n in notes]
    return "\n".join(wrapped(line) for line in out) + "\n"


def plain_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What makes these results less than they seem, in words (an empty list when nothing does)."""
    policies = [r for r in rows if not str(r["policy"]).startswith("oracle@")]
    notes = []
    if policies and not any(r["invocations"] for r in policies):
        return ["The trace holds no request: there is nothing to compare."]
    if len(policies) > 1 and len({r["cold_starts"] for r in policies}) == 1:
        notes.append("Every policy gives the same cold starts on this trace: its gaps are all shorter than the "
                     "shortest window or all longer than the longest, so only idle time tells them apart.")
    if policies and all(r["idle_container_minutes"] == 0 for r in policies):
        notes.append("No container idles within the trace's span: its requests keep every container busy; the "
                     "idle time is all after its end (the 'after end' column), which a longer trace would "
                     "spread over its span.")
    return notes


def wrapped(line: str, width: int = 100) -> str:
    """A line over `width` columns broken at spaces (tables fit by construction; prose may not)."""
    if len(line) <= width:
        return line
    import textwrap

    return "\n".join(textwrap.wrap(line, width, subsequent_indent="  " if line.startswith("- ") else "",
                                    break_on_hyphens=False))


def write_results(out_dir: Path, rows: Sequence[dict[str, Any]], name: str = "simulation") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(list(rows), indent=2))
    md_path.write_text(markdown_table(rows))
    return [json_path, md_path]


def pareto_plot(path: Path, fixed: Sequence[dict[str, Any]], marked: Sequence[dict[str, Any]],
                oracle_curve: Sequence[tuple[float, int]], oracle_p75_curve: Sequence[tuple[float, float]], title: str,
                learned: Sequence[dict[str, Any]] = (), baseline_idle: float | None = None) -> Path:
    """Two panels against idle container-minutes: total cold starts (left) and the p75 per-experiment
    cold-start rate (right; on top, idle time normalised to the fixed 10-minute keep-alive, the axis
    Shahrad et al. plot it against). Fixed windows and the adaptive policy's κ sweep are lines, named
    policies points, the oracle (run at every idle budget) the frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (totals, p75) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=120)
    panels = ((totals, "cold_starts", oracle_curve, "cold starts (total)"),
              (p75, "p75_experiment_cold_start_pct", oracle_p75_curve, "p75 per-experiment cold-start rate, %"))
    for ax, measure, frontier, label in panels:
        ax.plot([r["idle_container_minutes"] for r in fixed], [r[measure] for r in fixed], "o-", ms=3,
                color="tab:gray", label="fixed windows 1–240 min")
        for r in fixed:
            minutes = int(str(r["policy"]).split(":")[1]) // 60
            if minutes in (1, 5, 10, 30, 60, 120, 240):
                ax.annotate(f"{minutes} min", (r["idle_container_minutes"], r[measure]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points", color="tab:gray")
        if learned:
            ax.plot([r["idle_container_minutes"] for r in learned], [r[measure] for r in learned], "s-", ms=4,
                    color="tab:purple",
                    label="adaptive, κ = " + "…".join(str(r["policy"])[9:] for r in (learned[0], learned[-1])))
            for r in learned:
                ax.annotate(f"κ{str(r['policy'])[9:]}", (r["idle_container_minutes"], r[measure]), fontsize=7,
                            xytext=(3, -9), textcoords="offset points", color="tab:purple")
        xs, ys = zip(*frontier) if frontier else ((), ())
        ax.plot(xs, ys, "-", color="tab:green", label="oracle at each idle budget (future known)")
        for r in marked:
            ax.plot(r["idle_container_minutes"], r[measure], "D", ms=7, label=str(r["policy"]))
        ax.set_xlabel("idle container-minutes")
        ax.set_ylabel(label)
        upper = max([r["idle_container_minutes"] for r in list(fixed) + list(marked) + list(learned)] or [1])
        ax.set_xlim(0, upper * 1.05)
        ax.grid(alpha=0.3)
    totals.set_yscale("log")
    p75.set_ylim(0, 100)
    if baseline_idle:
        top = p75.secondary_xaxis("top", functions=(lambda x: x / baseline_idle, lambda x: x * baseline_idle))
        top.set_xlabel("idle time / fixed 10-minute keep-alive's")
    totals.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

"""Simulation reports: a Markdown table, a JSON file and a Pareto plot (matplotlib).

Why this module exists: the simulator's numbers are only useful when a person can read and compare
them; every run writes the same three artefacts so results can be diffed and pasted into docs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("policy", "invocations", "cold_starts", "cold_start_pct", "p75_experiment_cold_start_pct",
           "idle_container_minutes", "idle_after_end_minutes", "idle_cost", "cold_starts_x_oracle", "p75_x_oracle",
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

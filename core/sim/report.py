"""Simulation reports: a Markdown table, a JSON file and a Pareto plot (matplotlib).

Why this module exists: the simulator's numbers are only useful when a person can read and compare
them; every run writes the same three artefacts so results can be diffed and pasted into docs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("policy", "invocations", "cold_starts", "cold_start_pct", "p75_experiment_cold_start_pct",
           "idle_container_minutes", "idle_cost")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:,.2f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, rows: Sequence[dict[str, Any]], name: str = "simulation") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(list(rows), indent=2))
    md_path.write_text(markdown_table(rows))
    return [json_path, md_path]


def pareto_plot(path: Path, fixed: Sequence[dict[str, Any]], marked: Sequence[dict[str, Any]],
                oracle_curve: Sequence[tuple[float, int]], title: str, learned: Sequence[dict[str, Any]] = ()) -> Path:
    """Cold starts vs idle container-minutes: fixed windows and the adaptive policy's κ sweep (lines),
    named policies (points), oracle (frontier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ax.plot([r["idle_container_minutes"] for r in fixed], [r["cold_starts"] for r in fixed], "o-", ms=3,
            color="tab:gray", label="fixed windows 1–240 min")
    for r in fixed:
        minutes = int(str(r["policy"]).split(":")[1]) // 60
        if minutes in (1, 5, 10, 30, 60, 120, 240):
            ax.annotate(f"{minutes} min", (r["idle_container_minutes"], r["cold_starts"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color="tab:gray")
    if learned:
        ax.plot([r["idle_container_minutes"] for r in learned], [r["cold_starts"] for r in learned], "s-", ms=4,
                color="tab:purple", label="adaptive, κ = " + "…".join(str(r["policy"])[9:] for r in (learned[0], learned[-1])))
        for r in learned:
            ax.annotate(f"κ{str(r['policy'])[9:]}", (r["idle_container_minutes"], r["cold_starts"]), fontsize=7,
                        xytext=(3, -9), textcoords="offset points", color="tab:purple")
    xs, ys = zip(*oracle_curve) if oracle_curve else ((), ())
    ax.plot(xs, ys, "-", color="tab:green", label="oracle (future known)")
    for r in marked:
        ax.plot(r["idle_container_minutes"], r["cold_starts"], "D", ms=7, label=str(r["policy"]))
    ax.set_xlabel("idle container-minutes")
    ax.set_ylabel("cold starts")
    ax.set_yscale("log")
    upper = max([r["idle_container_minutes"] for r in list(fixed) + list(marked) + list(learned)] or [1])
    ax.set_xlim(0, upper * 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

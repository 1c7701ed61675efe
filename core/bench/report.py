"""The report of `hybrid-serve bench`: a table with a unit on every figure, and the JSON of every figure.

Why this module exists: what a run measured is shown one way — the terminal table a user reads (80
columns, rich) and the JSON file (`--json`) a script or a later comparison reads — from one result.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

Row = tuple[str, str, str]  # figure, value, unit


def number(value: float | None) -> str:
    """A figure with about three significant digits; "—" where it was not measured."""
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def seconds(value: float | None, missing: str = "—") -> tuple[str, str]:
    """A duration's value and unit, or why it is missing (no unit)."""
    return (number(value), "s") if value is not None else (missing, "")


def rows(result: dict[str, Any]) -> list[Row]:
    """The table's rows, in the order of the run's phases."""
    out: list[Row] = []
    cold = result["cold_start"]
    median = cold["median"]
    if cold["measured"]:
        head = f"cold start, median of {cold['measured']}" if cold["measured"] > 1 else "cold start"
        out += [(f"{head}: client's wait", *seconds(median["client_s"])),
                ("  server's wait", *seconds(median["server_wait_s"])),
                ("  container start", *seconds(median["container_start_s"], "n/a (in-process)"
                                                if "in-process" in cold["note"] else "not reported")),
                *([("    of which imports", *seconds(median["imports_s"]))] if median.get("imports_s") is not None
                  else [(f"  imports: {cold['imports']}", "", "")]),
                ("  model load", *seconds(median["model_load_s"], "not reported"))]
    else:
        out.append(("cold start", "not measured", ""))
    clients = result["warm"]["clients"]
    for key, label in (("warm", f"warm, {clients} client{'s' if clients > 1 else ''}"), ("single_client", "warm, 1 client")):
        if key == "single_client" and clients == 1:
            continue
        load = result[key]
        latency = load["latency_ms"]
        out += [(f"{label}: latency p50", number(latency["p50"]), "ms"),
                ("  latency p95", number(latency["p95"]), "ms"),
                ("  latency p99", number(latency["p99"]), "ms"),
                ("  throughput", number(load["throughput_rps"]), "req/s"),
                ("  mean batch", number(load["mean_batch_inputs"]), "inputs"),
                ("  errors", f"{load['errors']} of {load['requests']}", "requests")]
    gain = result["batching_gain"]["value"]
    out.append((f"batching gain ({clients} clients ÷ 1)", number(gain), "×") if clients > 1
               else ("batching gain", "n/a (1 client)", ""))
    ttft = result.get("ttft")
    if ttft is not None:
        out.append(("time to first token p50", number(ttft["p50_ms"]) if ttft["available"] else ttft["note"],
                    "ms" if ttft["available"] else ""))
    return out


def render(result: dict[str, Any], width: int = 80) -> str:
    """The table as text, `width` columns wide, with its title and the batching gain's definition."""
    table = Table(box=box.SIMPLE, title=f"{result['experiment']} ({result['task']}) on {result['target']}",
                  title_justify="left", caption=f"batching gain: {result['batching_gain']['definition']}",
                  caption_justify="left")
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("unit")
    for figure, value, unit in rows(result):
        table.add_row(figure, value, unit)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Every figure of the run, with its unit in its name (`_s`, `_ms`, `_rps`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


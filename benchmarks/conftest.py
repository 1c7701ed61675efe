"""Benchmark fixtures: tiny models, and a summary table written to benchmarks/results/ at the end.

Benchmarks measure; they never fail on a number (this machine is shared and noisy). Each comparison
is measured inside one run, interleaved, and reported as a ratio.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import clean_settings_env, registry_file, tiny_models  # noqa: F401  (shared fixtures)

RESULTS = Path(__file__).parent / "results"


class Summary:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, benchmark: str, metric: str, value: float, unit: str, target: str = "", note: str = "") -> None:
        self.rows.append({"benchmark": benchmark, "metric": metric, "value": value, "unit": unit, "target": target, "note": note})

    def write(self) -> None:
        if not self.rows:
            return
        RESULTS.mkdir(parents=True, exist_ok=True)
        meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(), "python": platform.python_version()}
        existing = {}
        summary_json = RESULTS / "summary.json"
        ran = {row["benchmark"] for row in self.rows}
        if summary_json.exists():  # keep rows of benchmarks not run this time (a rerun replaces all of its own)
            existing = {(r["benchmark"], r["metric"]): r for r in json.loads(summary_json.read_text()).get("rows", [])
                        if r["benchmark"] not in ran}
        for row in self.rows:
            existing[(row["benchmark"], row["metric"])] = row
        rows = list(existing.values())
        summary_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        lines = ["| benchmark | metric | value | unit | target | note |", "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            value = f"{r['value']:.3g}" if isinstance(r["value"], float) else str(r["value"])
            lines.append(f"| {r['benchmark']} | {r['metric']} | {value} | {r['unit']} | {r['target']} | {r['note']} |")
        (RESULTS / "summary.md").write_text(f"Measured {meta['when']} on {meta['machine']}\n\n" + "\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def summary() -> Iterator[Summary]:
    s = Summary()
    yield s
    s.write()

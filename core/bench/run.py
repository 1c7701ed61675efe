"""One `hybrid-serve bench` run, phase by phase: cold starts, warm load with CLIENTS clients, the same with
one client (the batching gain), and the time to first token of a generation experiment.

Why this module exists: the order of the phases and what each needs (a fresh local server per cold
start, a wait for scale to zero on a remote endpoint, a warm model before the load) is the plan's
execution, apart from how each figure is measured (`probes`, `load`) and shown (`report`).
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any, Callable

import httpx

from core.bench.load import closed_loop
from core.bench.local import check_registered, local_server
from core.bench.plan import BATCHING_GAIN_DEFINITION, IMPORTS_INCLUDED, BenchError, Plan
from core.bench.probes import ColdRound, cold_round, experiment_row, time_to_first_token, wait_until_cold
from core.bench.stats import LoadResult, finite

Say = Callable[[str], None]
#: Seconds one request may take (a cold start included: the server's own limit is 300 s by default).
REQUEST_TIMEOUT_S = 600.0


def run(plan: Plan, registry_path: Path | None, say: Say) -> dict[str, Any]:
    """Every figure of the plan, as the JSON the report renders and `--json` writes."""
    if plan.url is not None:
        return asyncio.run(_remote(plan, say))
    task = check_registered(plan, registry_path)
    rounds: list[ColdRound] = []
    servers = max(plan.cold_starts, 1)  # each cold start on a fresh server; the last one serves the load too
    for index in range(servers):
        with local_server(plan, say) as url:
            result = asyncio.run(_session(url, plan, task, say, index, last=index == servers - 1))
            rounds += result.pop("rounds")
    return {**result, "cold_start": cold_summary(rounds)}


async def _remote(plan: Plan, say: Say) -> dict[str, Any]:
    async with _client(plan.url or "", plan) as http:
        task = str((await experiment_row(http, plan)).get("task"))
    rounds: list[ColdRound] = []
    for index in range(max(plan.cold_starts, 1)):
        result = await _session(plan.url or "", plan, task, say, index, last=index == max(plan.cold_starts, 1) - 1)
        rounds += result.pop("rounds")
    return {**result, "cold_start": cold_summary(rounds)}


def _client(url: str, plan: Plan) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=plan.auth.headers(), timeout=REQUEST_TIMEOUT_S)


async def _session(url: str, plan: Plan, task: str, say: Say, index: int, last: bool) -> dict[str, Any]:
    """Cold start number `index` (if the plan asks for it), then, on the `last`, the warm phases."""
    rounds: list[ColdRound] = []
    async with _client(url, plan) as http:
        row = await experiment_row(http, plan)  # an unknown experiment or a refused credential stops here
        if index < plan.cold_starts:
            say(f"cold start {index + 1}/{plan.cold_starts}")
            if plan.url is not None and not await wait_until_cold(http, plan, say):
                say("  still warm: this cold start is not measured")
            else:
                cold = await cold_round(http, plan, task)
                say(f"  answered in {cold.client_s:.2f} s" + ("" if cold.cold else f" ({cold.note})"))
                rounds.append(cold)
        if not last:
            return {"rounds": rounds}
        say("warming up (one request, not measured)")
        response = await http.post(f"/predict/{plan.experiment}", json=plan.payload(task))
        if response.status_code != 200:
            raise BenchError(f"{plan.target} answered {response.status_code} to the warm-up request: {response.text[:300]}")
        ttft = None
        if task == "text-generation":
            say("time to first token (streamed generation)")
            ttft = await time_to_first_token(http, plan)
    warm = await _load(url, plan, task, plan.clients, say)
    single = await _load(url, plan, task, 1, say) if plan.clients > 1 else warm
    gain = warm.throughput / single.throughput if single.throughput > 0 else float("nan")
    return {
        "experiment": plan.experiment, "task": task, "target": plan.target,
        "backend": None if plan.url is not None else plan.backend, "url": plan.url,
        "state_before": row.get("state"),
        "plan": {"clients": plan.clients, "duration_s": plan.duration_s, "cold_starts": plan.cold_starts,
                 "input": plan.input, "max_new_tokens": plan.max_new_tokens if task == "text-generation" else None},
        "warm": {"clients": plan.clients, **warm.to_json()},
        "single_client": {"clients": 1, **single.to_json()},
        "batching_gain": {"value": finite(gain), "definition": BATCHING_GAIN_DEFINITION.replace("CLIENTS", str(plan.clients))},
        "ttft": ttft,
        "rounds": rounds,
    }


async def _load(url: str, plan: Plan, task: str, clients: int, say: Say) -> LoadResult:
    say(f"warm load: {clients} client{'s' if clients > 1 else ''} for {plan.duration_s:g} s")
    result = await closed_loop(url, plan.experiment, plan.payload(task), clients, plan.duration_s, plan.auth.headers(),
                               tick=lambda done, total, answered: say(f"  {done:.0f}/{total:g} s, {answered} answered"),
                               timeout_s=REQUEST_TIMEOUT_S)
    say(f"  {result.statuses[200]} answered, {result.errors} errors, {result.throughput:.1f} req/s")
    if result.statuses[200] == 0:
        raise BenchError(f"{plan.target}: no request answered under load (statuses: {dict(result.statuses)})")
    return result


def cold_summary(rounds: list[ColdRound]) -> dict[str, Any]:
    """Each cold start and the median of each part over those that were cold."""
    cold = [r for r in rounds if r.cold]

    def median(name: str) -> float | None:
        values = [v for r in cold if (v := getattr(r, name)) is not None]
        return finite(statistics.median(values)) if values else None

    parts = ("client_s", "server_wait_s", "container_start_s", "imports_s", "model_load_s")
    return {"measured": len(cold), "rounds": [r.to_json() for r in rounds], "median": {p: median(p) for p in parts},
            "imports": IMPORTS_INCLUDED, "note": next((r.note for r in cold if r.note), "")}

"""Single requests the bench times one at a time: the experiment's row, a cold start and where its time
went, waiting for scale to zero, and the time to first token of a streamed generation.

Why this module exists: the cold start's split is the server's own report (the first answer's
`cold_load` and `timing.load_ms`, then `/experiments/{id}`'s `model.last_cold_start`, or the in-process
load history); reading it, and telling an unknown experiment or a refused credential apart from a
failing server, is one concern, kept apart from the load generator and the report.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Callable

import httpx

from core.bench.plan import TTFT_REQUESTS, BenchError, Plan
from core.bench.stats import finite, percentile

Say = Callable[[str], None]


@dataclass(frozen=True)
class ColdRound:
    """One cold start, seconds: as the client saw it, as the server waited for it, and its parts."""

    cold: bool  # the server said this request paid a cold start
    client_s: float
    server_wait_s: float | None
    container_start_s: float | None  # the container's start up to our code, imports included
    model_load_s: float | None
    note: str = ""
    imports_s: float | None = None  # the part of the container's start spent importing the model stack

    def to_json(self) -> dict[str, Any]:
        return {k: finite(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def refused(response: httpx.Response, plan: Plan) -> BenchError:
    """The error for a non-2xx answer, in words (what to pass for a 401 or 403)."""
    if response.status_code in (401, 403):
        how = "--token or HYBRID_API_TOKEN (a bearer token)"
        if plan.url is not None:
            how += ", --modal-key / --modal-secret or MODAL_PROXY_KEY / MODAL_PROXY_SECRET (Modal proxy auth)"
        sent = plan.auth.describe()
        return BenchError(f"{plan.target} answered {response.status_code} ({response.reason_phrase}) with credentials: "
                          f"{sent}; pass {how}", 2)
    return BenchError(f"{plan.target} answered {response.status_code} for {response.request.url.path}: "
                      f"{response.text[:300]}")


async def experiment_row(http: httpx.AsyncClient, plan: Plan) -> dict[str, Any]:
    """`GET /experiments/{id}`: the experiment's task, state and last cold start; an unknown one exits 2."""
    try:
        response = await http.get(f"/experiments/{plan.experiment}")
    except httpx.HTTPError as exc:
        raise BenchError(f"{plan.target}: no answer ({type(exc).__name__}: {exc})") from None
    if response.status_code in (404, 422):
        raise BenchError(f"unknown experiment {plan.experiment!r} at {plan.target} "
                         "(`hybrid-serve experiments list` names the registered ones)", 2)
    if response.status_code != 200:
        raise refused(response, plan)
    return response.json()  # type: ignore[no-any-return]


async def wait_until_cold(http: httpx.AsyncClient, plan: Plan, say: Say, poll_s: float = 1.0) -> bool:
    """Until the experiment has scaled to zero (at most its window left plus two minutes): True once cold."""
    row = await experiment_row(http, plan)
    if row.get("state") == "cold":
        return True
    left = max(0.0, float(row.get("scaledown_window_s") or 0) - float(row.get("idle_s") or 0)) + 120
    say(f"waiting for {plan.experiment} to scale to zero (state {row.get('state')!r}; at most {left:.0f} s)")
    deadline = time.monotonic() + left
    while time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        if (await experiment_row(http, plan)).get("state") == "cold":
            return True
    return False


async def cold_round(http: httpx.AsyncClient, plan: Plan, task: str) -> ColdRound:
    """The first request to a cold experiment, timed, and the split the server reports for it."""
    sent = time.perf_counter()
    try:
        response = await http.post(f"/predict/{plan.experiment}", json=plan.payload(task))
    except httpx.HTTPError as exc:
        raise BenchError(f"{plan.target}: the cold request got no answer ({type(exc).__name__}: {exc})") from None
    client_s = time.perf_counter() - sent
    if response.status_code != 200:
        raise refused(response, plan)
    answer = response.json()
    load_ms = (answer.get("timing") or {}).get("load_ms")
    server_wait_s = None if load_ms is None else load_ms / 1000
    if not answer.get("cold_load"):
        return ColdRound(False, client_s, server_wait_s, None, None, "the experiment was warm: no cold start")
    model = (await experiment_row(http, plan)).get("model") or {}
    split = model.get("last_cold_start") or {}
    if split.get("replica_start_s") is not None:
        return ColdRound(True, client_s, server_wait_s, split["replica_start_s"], split.get("model_load_s"),
                         imports_s=split.get("imports_s"))
    if model.get("last_cold_load_ms") is not None:  # in-process: the server is the container, already up
        return ColdRound(True, client_s, server_wait_s, None, model["last_cold_load_ms"] / 1000,
                         "in-process: no container starts, the model loads in the server")
    return ColdRound(True, client_s, server_wait_s, None, None, "the server reports no split of its cold start")


async def time_to_first_token(http: httpx.AsyncClient, plan: Plan) -> dict[str, Any]:
    """`TTFT_REQUESTS` streamed generations one after the other: the time to the first token's `data:`
    event of each (a `start` event of metadata before it is not a token), or why there is none (a
    server that answers 422 for `stream` does not stream)."""
    samples, totals, tokens = [], [], []
    for _ in range(TTFT_REQUESTS):
        sent = time.perf_counter()
        async with http.stream("POST", f"/predict/{plan.experiment}", json=plan.payload("text-generation", True)) as response:
            if response.status_code == 422 or (response.status_code == 200 and
                                               "text/event-stream" not in response.headers.get("content-type", "")):
                await response.aread()
                return {"available": False, "note": "not available (server does not stream)"}
            if response.status_code != 200:
                await response.aread()
                raise refused(response, plan)
            first, count = await first_token(response.aiter_lines(), sent)
        if first is None:
            return {"available": False, "note": "not available (the stream held no token)"}
        samples.append(first)
        totals.append(time.perf_counter() - sent)
        tokens.append(count)
    return {"available": True, "requests": len(samples), "p50_ms": finite(percentile(samples, 50) * 1000),
            "samples_ms": [finite(s * 1000) for s in samples], "total_ms": [finite(t * 1000) for t in totals],
            "token_events": tokens, "note": ""}


async def first_token(lines: AsyncIterator[str], sent: float) -> tuple[float | None, int]:
    """Seconds from `sent` to the first token's `data:` line of a server-sent event stream (an event named
    `start` or `end` is no token), and how many token events the stream held."""
    event, first, count = "", None, 0
    async for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            if event not in ("start", "end"):
                first = first if first is not None else time.perf_counter() - sent
                count += 1
        elif not line:
            event = ""
    return first, count

"""The routes that describe the server: `GET /health`, `GET /experiments`, `GET /metrics`, `GET /traffic`.

Why this module exists: an operator (and a load balancer, and Prometheus) reads the server's state
through these; they only map HTTP onto the state views (core.http.views), which build the answers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Iterable, Iterator

from fastapi import FastAPI, Path, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from core.http.error_shape import documented_errors
from core.http.views import StateViews
from core.serving.registry import EXPERIMENT_ID_PATTERN


def add_state_routes(app: FastAPI, views: StateViews) -> None:
    """`/health`, `/experiments`, `/metrics` and `/traffic`, rendered by `views`."""

    @app.get("/health", responses=documented_errors(401))
    async def health() -> dict[str, Any]:
        """Status, authentication mode (never a secret), windows, activity, cached models, configuration."""
        return await views.health()

    @app.get("/experiments", responses=documented_errors(401))
    async def experiments(offset: Annotated[int, Query(ge=0)] = 0,
                          limit: Annotated[int | None, Query(ge=1)] = None) -> list[dict[str, Any]]:
        """The registry with each experiment's state (cold / loading / warm / failed) and window;
        `offset` / `limit` page through a large registry."""
        return await views.experiments(offset, limit)

    @app.get("/experiments/{experiment_id}", responses=documented_errors(401, 404))
    async def experiment(
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="A registered experiment id.")],
    ) -> dict[str, Any]:
        """One experiment: its `/experiments` row and its cost ledger (container-seconds and cost by state,
        for the last hour, today and since start)."""
        return await views.experiment(experiment_id)

    @app.get("/traffic", response_class=StreamingResponse, responses=documented_errors(401))
    async def traffic(since: Annotated[float | None, Query(description="Epoch seconds: only records from then on.")] = None,
                      experiment: Annotated[str | None, Query(description="Only this experiment's records.")] = None,
                      ) -> StreamingResponse:
        """The traffic recording as JSON lines (`application/x-ndjson`), oldest segment first: each finished
        request (time, experiment, status, duration, cold, queue wait, window — never inputs or outputs)
        and each scaling event. What `hybrid-serve recommend --from URL` reads."""
        records = (r for r in views.path.traffic.records(since) if experiment is None or r.get("experiment") == experiment)
        return StreamingResponse(iterate_in_threadpool(ndjson_chunks(records)), media_type="application/x-ndjson")

    @app.get("/metrics", response_class=PlainTextResponse, responses=documented_errors(401))
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return PlainTextResponse(await views.metrics(), media_type=views.path.metrics.content_type)


def ndjson_chunks(records: Iterable[dict[str, Any]], per_chunk: int = 1000) -> Iterator[str]:
    """Records as JSON lines, `per_chunk` lines to a chunk (a disk read per record would cost a thread hop each)."""
    chunk: list[str] = []
    for record in records:
        chunk.append(json.dumps(record, separators=(",", ":")) + "\n")
        if len(chunk) >= per_chunk:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)

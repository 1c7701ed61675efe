"""The HTTP API (FastAPI): /predict/{experiment_id}, /health, /experiments, /metrics.

Why this module exists: it maps the request path and the state views onto HTTP and nothing more —
every error becomes JSON `{"error": {"type", "message"}}` with a status that fits (404 unknown
experiment, 413 too large, 422 invalid input, 503 model unavailable, 504 timeout), never a stack
trace. Every backend serves this same app.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.auth import AuthMode, auth_mode
from core.http.middleware import BearerToken, BodySizeLimit, error_body
from core.http.views import StateViews
from core.serving.errors import ServeError
from core.serving.registry import EXPERIMENT_ID_PATTERN, Registry
from core.serving.request_path import RequestPath
from core.settings import Settings

log = logging.getLogger("hybrid_serve.api")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One input, or a list of inputs (one output each).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Task parameters, e.g. top_k, max_new_tokens.")


def create_app(path: RequestPath, backend: str = "inprocess", mode: AuthMode | None = None) -> FastAPI:
    """The FastAPI app serving `path` (OpenAPI docs at /docs)."""
    views = StateViews(path, backend, mode or auth_mode(path.settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await path.close()

    app = FastAPI(
        title="hybrid-serve",
        description="Per-experiment model serving with hybrid keep-warm windows.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.request_path = path
    app.add_middleware(BodySizeLimit, max_bytes=path.settings.max_body_bytes)
    if path.settings.api_token is not None:
        app.add_middleware(BearerToken, token=path.settings.api_token.get_secret_value())

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        headers = None if exc.retry_after_s is None else {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        return JSONResponse(error_body(exc.error_type, exc.message), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        return JSONResponse(error_body("invalid_request", message, details=details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body("http_error", str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return JSONResponse(error_body("internal_error", f"unexpected {type(exc).__name__}; see the server log"), status_code=500)

    @app.post("/predict/{experiment_id}")
    async def predict(
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="A registered experiment id.")],
        body: PredictRequest,
    ) -> JSONResponse:
        """Run the experiment's model on the inputs; reports timing and whether this request paid a cold load."""
        answer = await path.predict(experiment_id, body.inputs, body.parameters)
        prediction = answer.prediction
        # A plain JSONResponse: the outputs are already JSON types, so FastAPI's encoder walk is skipped.
        return JSONResponse({
            "experiment_id": experiment_id,
            "task": answer.experiment.task.value,
            "outputs": prediction.outputs,
            "cold_load": prediction.cold_load,
            "timing": {
                "queue_ms": round(prediction.queue_ms, 3),
                "load_ms": round(prediction.load_ms, 3),
                "inference_ms": round(prediction.inference_ms, 3),
                "total_ms": round(answer.total_s * 1000, 3),
            },
            "batch_inputs": prediction.batch_inputs,
            "replica": prediction.replica,
            "scaledown_window_s": answer.decision.window_s,
            "window_reason": answer.decision.reason.value,
        })

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Status, authentication mode (never a secret), windows, activity, cached models, configuration."""
        return await views.health()

    @app.get("/experiments")
    async def experiments() -> list[dict[str, Any]]:
        """The registry with each experiment's state (cold / loading / warm / failed) and window."""
        return await views.experiments()

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(await views.metrics(), media_type=path.metrics.content_type)

    return app


def build_inprocess_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    """The in-process server: this process loads and runs the models itself."""
    from core.serving.engine import InferenceEngine

    registry = registry or Registry.load(settings.registry_path)
    return create_app(RequestPath(settings, registry, InferenceEngine(settings)))

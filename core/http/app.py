"""The HTTP API (FastAPI): /predict/{experiment_id}, /health, /experiments (PUT/DELETE to change the
registry), /metrics.

Why this module exists: it maps the request path and the state views onto HTTP and nothing more —
every error becomes JSON `{"error": {"type", "message"}}` with a status that fits (404 unknown
experiment, 413 too large, 422 invalid input, 503 model unavailable, 504 timeout), never a stack
trace. Every backend serves this same app.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.auth import AuthMode, auth_mode
from core.http.middleware import BearerToken, BodyLimits, UnexpectedErrors, error_body
from core.http.views import StateViews
from core.serving.errors import AdminDisabled, ServeError
from core.serving.live_registry import LiveRegistry
from core.serving.registry import EXPERIMENT_ID_PATTERN, Registry
from core.serving.request_path import RequestPath
from core.settings import Settings



class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One input, or a list of inputs (one output each).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Task parameters, e.g. top_k, max_new_tokens.")


class ExperimentBody(BaseModel):
    """A registry entry, as in the registry file's `[experiments.<id>]` table."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="package:PKG/DIR, a Hugging Face repo id, or mlflow:models:/NAME/VERSION | @ALIAS | runs:/…")
    task: str = Field(description="feature-extraction | text-classification | text-generation")
    revision: str | None = Field(default=None, description="Hugging Face sources: a branch, tag or commit.")
    sha256: str | None = Field(default=None, description="The weights file must hash to this.")
    gpu: str | None = Field(default=None, description="Modal only: this experiment's GPU (default MODAL_GPU).")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error: `{"error": {"type", "message"}}`, never a stack trace."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "missing or wrong bearer token (when HYBRID_API_TOKEN is set)",
        403: "registry changes over HTTP need HYBRID_API_TOKEN to be set",
        404: "unknown experiment",
        409: "the registry cannot be changed (the shipped demo registry: set HYBRID_REGISTRY)",
        408: "the request body stalled (HYBRID_BODY_TIMEOUT_S)",
        413: "body or input count over the limits (HYBRID_MAX_BODY_BYTES, HYBRID_MAX_INPUTS)",
        422: "invalid experiment id, body, input, parameter or registry entry (the message names the field)",
        500: "the model failed on this request's inputs, or an unexpected error (with a request id)",
        503: "model unavailable, too many requests waiting, or shutting down (with Retry-After when retrying helps)",
        504: "no container answered within HYBRID_COLD_START_TIMEOUT_S",
    }
    return {status: {"model": ErrorBody, "description": descriptions[status]} for status in statuses}


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Run `work`, cancelling it if the client hangs up first: its inputs never reach the model."""
    task = asyncio.ensure_future(work)

    async def hung_up() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(hung_up())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        raise ClientGone
    return task.result()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _experiment_body(request: Request) -> ExperimentBody:
    """The PUT body, validated as FastAPI validates a body parameter (same 422 shape), but only once
    the route's dependencies (the admin check) have passed."""
    raw = await request.body()
    try:
        return ExperimentBody.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    probe = {**request.scope, "method": ""}
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(probe)[0] != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def create_app(path: RequestPath, backend: str = "inprocess", mode: AuthMode | None = None) -> FastAPI:
    """The FastAPI app serving `path` (OpenAPI docs at /docs)."""
    views = StateViews(path, backend, mode or auth_mode(path.settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await path.start()
        yield
        await path.close()

    app = FastAPI(
        title="hybrid-serve",
        description="Per-experiment model serving with hybrid keep-warm windows.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.request_path = path
    app.add_middleware(BodyLimits, max_bytes=path.settings.max_body_bytes, timeout_s=path.settings.body_timeout_s)
    if path.settings.api_token is not None:
        app.add_middleware(BearerToken, token=path.settings.api_token.get_secret_value())
    app.add_middleware(UnexpectedErrors)  # the outermost: whatever escapes the others

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
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404 route, 405, ...
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names only the first route of the path: name them all
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return JSONResponse(error_body("http_error", str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(ClientGone)
    async def _client_gone(_: Request, __: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it: the connection is gone

    @app.post("/predict/{experiment_id}", responses=_errors(401, 404, 408, 413, 422, 500, 503, 504))
    async def predict(
        request: Request,
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="A registered experiment id.")],
        body: PredictRequest,
    ) -> JSONResponse:
        """Run the experiment's model on the inputs; reports timing and whether this request paid a cold load."""
        answer = await _unless_disconnected(request, path.predict(experiment_id, body.inputs, body.parameters))
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
            "scaledown_window_s": answer.plan.window_s,
            "window_reason": answer.plan.reason.value,
        })

    @app.get("/health", responses=_errors(401))
    async def health() -> dict[str, Any]:
        """Status, authentication mode (never a secret), windows, activity, cached models, configuration."""
        return await views.health()

    @app.get("/experiments", responses=_errors(401))
    async def experiments(offset: Annotated[int, Query(ge=0)] = 0,
                          limit: Annotated[int | None, Query(ge=1)] = None) -> list[dict[str, Any]]:
        """The registry with each experiment's state (cold / loading / warm / failed) and window;
        `offset` / `limit` page through a large registry."""
        return await views.experiments(offset, limit)

    def _admin() -> None:
        if path.settings.api_token is None:  # with a token, BearerToken has already checked it
            raise AdminDisabled("registry changes over HTTP need a bearer token: set HYBRID_API_TOKEN "
                                "(or use `hybrid-serve experiments` on the server's machine)")

    @app.put("/experiments/{experiment_id}", responses=_errors(401, 403, 409, 422, 503), dependencies=[Depends(_admin)],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ExperimentBody.model_json_schema()}}}})
    async def put_experiment(
        request: Request,
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="The experiment's id.")],
    ) -> JSONResponse:
        """Register an experiment, or change its model (its old containers drain, the next request
        cold-starts the new model); 201 when it is new. Needs the bearer token."""
        body = await _experiment_body(request)  # read after the admin check: a refused caller learns nothing
        experiment, change = await path.register(experiment_id, body.model_dump(exclude_none=True))
        outcome = "added" if change.added else "changed" if change.changed else "unchanged"
        return JSONResponse({"experiment": experiment.describe(), "change": outcome},
                            status_code=201 if change.added else 200)

    @app.delete("/experiments/{experiment_id}", responses=_errors(401, 403, 404, 409, 503), dependencies=[Depends(_admin)])
    async def delete_experiment(
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="The experiment's id.")],
    ) -> dict[str, Any]:
        """Retire an experiment: later requests get 404; requests in flight finish. Needs the bearer token."""
        await path.retire(experiment_id)
        return {"removed": experiment_id}

    @app.get("/metrics", response_class=PlainTextResponse, responses=_errors(401))
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return PlainTextResponse(await views.metrics(), media_type=path.metrics.content_type)

    return app


def build_inprocess_app(settings: Settings, registry: Registry | LiveRegistry | None = None) -> FastAPI:
    """The in-process server: this process loads and runs the models itself. Without `registry`, the
    registry file (HYBRID_REGISTRY) is followed live."""
    from core.serving.engine import InferenceEngine

    if registry is None:
        registry = LiveRegistry.from_file(settings.registry_path, settings.registry_poll_s, settings.mlflow_poll_s)
    return create_app(RequestPath(settings, registry, InferenceEngine(settings)))

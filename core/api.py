"""The HTTP API (FastAPI): /predict/{experiment_id}, /health, /experiments, /metrics.

Why this module exists: it maps the serving service onto HTTP and nothing more — every error becomes
JSON `{"error": {"type", "message"}}` with a status that fits (404 unknown experiment, 413 too
large, 422 invalid input, 503 model unavailable, 504 timeout), never a stack trace. Every backend
serves this same app.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import ServeError
from core.registry import EXPERIMENT_ID_PATTERN, Registry
from core.service import ServingService
from core.settings import Settings

log = logging.getLogger("hybrid_serve.api")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One input, or a list of inputs (one output each).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Task parameters, e.g. top_k, max_new_tokens.")


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, **extra}}


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:  # once the limit is crossed, whatever the app answers is replaced by the 413
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes (HYBRID_MAX_BODY_BYTES)"
        await JSONResponse(error_body("payload_too_large", message), status_code=413)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class BearerToken:
    """Requires `Authorization: Bearer <token>` on every route but /health (for load balancers' probes)."""

    OPEN_PATHS = ("/health",)

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.OPEN_PATHS:
            given = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self._expected):
                body = error_body("unauthorized", "missing or wrong bearer token (Authorization: Bearer <HYBRID_API_TOKEN>)")
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: ServingService) -> FastAPI:
    """The FastAPI app serving `service` (OpenAPI docs at /docs)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.close()

    app = FastAPI(
        title="hybrid-serve",
        description="Per-experiment model serving with hybrid keep-warm windows.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=service.settings.max_body_bytes)
    if service.settings.api_token is not None:
        app.add_middleware(BearerToken, token=service.settings.api_token.get_secret_value())

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(error_body(exc.error_type, exc.message), status_code=exc.status_code)

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
        started = time.perf_counter()
        status = "200"
        try:
            prediction, decision = await service.predict(experiment_id, body.inputs, body.parameters)
        except ServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            if service.registry.get(experiment_id) is not None:
                service.metrics.requests.labels(experiment_id, status).inc()
                service.metrics.latency.labels(experiment_id).observe(time.perf_counter() - started)
        total_ms = (time.perf_counter() - started) * 1000
        # A plain JSONResponse: the outputs are already JSON types, so FastAPI's encoder walk is skipped.
        return JSONResponse({
            "experiment_id": experiment_id,
            "task": service.registry.get(experiment_id).task.value,  # type: ignore[union-attr]
            "outputs": prediction.outputs,
            "cold_load": prediction.cold_load,
            "timing": {
                "queue_ms": round(prediction.queue_ms, 3),
                "load_ms": round(prediction.load_ms, 3),
                "inference_ms": round(prediction.inference_ms, 3),
                "total_ms": round(total_ms, 3),
            },
            "batch_inputs": prediction.batch_inputs,
            "replica": prediction.replica,
            "scaledown_window_s": decision.window_s,
            "window_reason": decision.reason.value,
        })

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Status, authentication mode (never a secret), windows, activity, cached models, configuration."""
        return await service.health()

    @app.get("/experiments")
    async def experiments() -> list[dict[str, Any]]:
        """The registry with each experiment's state (cold / loading / warm / failed) and window."""
        return await service.experiments()

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(await service.render_metrics(), media_type=service.metrics.content_type)

    return app


def build_inprocess_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    """The in-process server: this process loads and runs the models itself."""
    from core.engine import InferenceEngine

    registry = registry or Registry.load(settings.registry_path)
    return create_app(ServingService(settings, registry, InferenceEngine(settings)))

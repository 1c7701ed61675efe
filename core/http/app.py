"""The HTTP API (FastAPI): /predict/{experiment_id}, /health, /experiments (PUT/DELETE to change the
registry), /metrics, /dashboard, /docs.

Why this module exists: it assembles the app every backend serves — the request path's lifespan, the
middlewares (body limits, the token, the last-resort 500), the routes grouped by concern (prediction:
core.http.predict_routes; state views: core.http.state_routes; registry changes:
core.http.registry_routes; the dashboard: core.http.dashboard_routes; the API docs, served offline:
core.http.docs_routes) and the error handlers (core.http.error_handlers), so that every error
becomes JSON `{"error": {"type", "message"}}` with a status that fits, never a stack trace.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from core.auth import AuthMode, auth_mode
from core.http.bearer_token import BearerToken
from core.http.body_limits import BodyLimits
from core.http.dashboard_routes import PUBLIC_PATHS as DASHBOARD_PAGES, add_dashboard_routes
from core.http.docs_routes import PUBLIC_PATHS as DOCS_PAGES, add_docs_routes
from core.http.error_handlers import add_error_handlers
from core.http.predict_routes import add_predict_routes
from core.http.registry_routes import add_registry_routes
from core.http.state_routes import add_state_routes
from core.http.unexpected_errors import UnexpectedErrors
from core.http.views import StateViews
from core.serving.live_registry import LiveRegistry
from core.serving.registry import Registry
from core.serving.request_path import RequestPath
from core.settings import Settings


def create_app(path: RequestPath, backend: str = "inprocess", mode: AuthMode | None = None) -> FastAPI:
    """The FastAPI app serving `path` (OpenAPI docs at /docs)."""

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
        docs_url=None,  # /docs and /redoc: core.http.docs_routes, with their files served here (no CDN)
        redoc_url=None,
    )
    app.state.request_path = path
    app.add_middleware(BodyLimits, max_bytes=path.settings.max_body_bytes, timeout_s=path.settings.body_timeout_s)
    if path.settings.api_token is not None:
        app.add_middleware(BearerToken, token=path.settings.api_token.get_secret_value(), public=DASHBOARD_PAGES + DOCS_PAGES)
    app.add_middleware(UnexpectedErrors)  # the outermost: whatever escapes the others
    add_error_handlers(app)
    add_predict_routes(app, path)
    views = StateViews(path, backend, mode or auth_mode(path.settings))
    add_state_routes(app, views)
    add_registry_routes(app, path)
    add_dashboard_routes(app, views)
    add_docs_routes(app, bearer=path.settings.api_token is not None)
    return app


def build_inprocess_app(settings: Settings, registry: Registry | LiveRegistry | None = None) -> FastAPI:
    """The in-process server: this process loads and runs the models itself. Without `registry`, the
    registry file (HYBRID_REGISTRY) is followed live."""
    from core.serving.engine import InferenceEngine

    if registry is None:
        registry = LiveRegistry.from_file(settings.registry_path, settings.registry_poll_s, settings.mlflow_poll_s)
    return create_app(RequestPath(settings, registry, InferenceEngine(settings), loads_here=True))

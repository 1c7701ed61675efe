"""The app's exception handlers: every error a route raises becomes the API's one JSON error shape.

Why this module exists: the serving path raises typed errors (`ServeError`: 404, 413, 422, 503 with
Retry-After, …), FastAPI raises its own (422 validation, 404 route, 405 method), and a client that
hung up raises `ClientGone`; each gets a status that fits and the same `{"error": {...}}` body,
never a stack trace.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.http.disconnect import ClientGone
from core.http.error_shape import error_body
from core.serving.errors import ServeError


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    probe = {**request.scope, "method": ""}
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(probe)[0] != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
    headers = None if exc.retry_after_s is None else {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return JSONResponse(error_body(exc.error_type, exc.message), status_code=exc.status_code, headers=headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
    message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
    return JSONResponse(error_body("invalid_request", message, details=details), status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404 route, 405, ...
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names only the first route of the path: name them all
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return JSONResponse(error_body("http_error", str(exc.detail)), status_code=exc.status_code, headers=headers)


async def _client_gone(_: Request, __: ClientGone) -> Response:
    return Response(status_code=499)  # nobody reads it: the connection is gone


def add_error_handlers(app: FastAPI) -> None:
    """Answer every known error in the API's error shape (what escapes them: `UnexpectedErrors`)."""
    app.exception_handler(ServeError)(_serve_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(ClientGone)(_client_gone)

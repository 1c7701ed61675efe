"""The one error shape of the API: `{"error": {"type", "message", …}}`.

Why this module exists: routes, exception handlers and middlewares all answer errors, and a client
must be able to read every one of them the same way — one JSON shape, credentials scrubbed, never a
stack trace. The shape is built here and documented (OpenAPI) here, once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.serving.scrub import scrub_tree


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape of the API: `{"error": {"type", "message", …}}`, credentials scrubbed."""
    return {"error": scrub_tree({"type": error_type, "message": message, **extra})}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error: `{"error": {"type", "message"}}`, never a stack trace."""

    error: ErrorDetail


#: What each error status means, wherever a route may answer it (the OpenAPI descriptions).
ERROR_DESCRIPTIONS = {
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


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the error shape and meaning of each status it may answer."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}

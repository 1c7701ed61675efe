"""Errors the server reports to clients, each with the HTTP status that fits.

Why this module exists: every layer (registry, cache, batching, backends) raises one of these, and
the API turns them into `{"error": {"type", "message"}}` JSON — never a stack trace.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable


class ServeError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UnknownExperiment(ServeError):
    status_code = 404
    error_type = "unknown_experiment"


class InvalidInput(ServeError):
    status_code = 422
    error_type = "invalid_input"


class PayloadTooLarge(ServeError):
    status_code = 413
    error_type = "payload_too_large"


class ModelUnavailable(ServeError):
    """The model could not be loaded (bad weights, missing files, offline hub); a later request may retry."""

    status_code = 503
    error_type = "model_unavailable"


class BackendUnavailable(ServeError):
    status_code = 503
    error_type = "backend_unavailable"


class UpstreamTimeout(ServeError):
    status_code = 504
    error_type = "timeout"


# --- errors across a process boundary (a Ray replica, a Modal container) --------------------------
# Exceptions do not survive every transport intact, so workers return errors as plain values and
# the ingress raises them again: the client sees the same status and message as in-process.

def error_value(exc: ServeError) -> dict[str, dict[str, object]]:
    return {"error": {"type": exc.error_type, "status": exc.status_code, "message": exc.message}}


def raise_error_value(value: dict[str, object]) -> None:
    """Raise the ServeError a worker returned as a value (no-op when the value is not an error)."""
    error = value.get("error")
    if not isinstance(error, dict):
        return
    by_type = {cls.error_type: cls for cls in _subclasses(ServeError)}
    raise by_type.get(str(error.get("type")), ServeError)(str(error.get("message")))


def _subclasses(cls: type[ServeError]) -> list[type[ServeError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


async def await_worker(call: Awaitable[Any], experiment_id: str, timeout_s: float, worker: str) -> dict[str, Any]:
    """Await a worker's answer (a Ray replica, a Modal container) and raise what it means for the client:
    no answer in time → 504 (the remote call is cancelled where it can be), a failed transport → 503,
    an error returned as a value → that error."""
    try:
        result = await asyncio.wait_for(call, timeout=timeout_s)
    except TimeoutError:
        cancel = getattr(call, "cancel", None)
        if callable(cancel):
            cancel()
        raise UpstreamTimeout(
            f"{experiment_id}: no {worker} answered within {timeout_s:g}s "
            "(HYBRID_COLD_START_TIMEOUT_S); it may still be starting, retry later"
        ) from None
    except ServeError:
        raise
    except Exception as exc:  # the worker died mid-request, the deployment is gone, ...
        raise BackendUnavailable(f"{experiment_id}: the {worker} failed ({type(exc).__name__}); retry") from None
    raise_error_value(result)
    return result

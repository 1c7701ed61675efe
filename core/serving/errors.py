"""Errors the server reports to clients, each with the HTTP status that fits.

Why this module exists: every layer (registry, cache, batching, backends) raises one of these, and
the API turns them into `{"error": {"type", "message"}}` JSON — never a stack trace.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class ServeError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        #: When set, the client may retry after this many seconds (sent as `Retry-After`).
        self.retry_after_s = retry_after_s


class UnknownExperiment(ServeError):
    status_code = 404
    error_type = "unknown_experiment"

    @classmethod
    def named(cls, experiment_id: str, known: Iterable[str]) -> "UnknownExperiment":
        """The 404 for an id not registered, naming the closest registered id when one is close (a typo)."""
        close = difflib.get_close_matches(experiment_id, list(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return cls(f"experiment {experiment_id!r} is not registered ({hint}GET /experiments lists them)")


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


class Overloaded(ServeError):
    """Too many requests wait for this experiment (HYBRID_MAX_QUEUE), or the server is shutting down."""

    status_code = 503
    error_type = "overloaded"


class ModelFailed(ServeError):
    """The model raised on this request's inputs (its neighbours in a batch were served)."""

    status_code = 500
    error_type = "model_failed"


class InvalidExperiment(ServeError):
    """A registry change that does not validate (the message names the entry and the field)."""

    status_code = 422
    error_type = "invalid_experiment"


class RegistryReadOnly(ServeError):
    """This server's registry cannot be changed (the shipped demo registry, a registry given in code)."""

    status_code = 409
    error_type = "registry_read_only"


class RegistryUnavailable(ServeError):
    """The registry's storage cannot be read or written now (a file that is invalid, vanished, not a
    file, ...); the server keeps serving the last good registry."""

    status_code = 503
    error_type = "registry_unavailable"


class AdminDisabled(ServeError):
    """Registry changes over HTTP need a bearer token (HYBRID_API_TOKEN), and none is configured."""

    status_code = 403
    error_type = "admin_disabled"

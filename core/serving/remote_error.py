"""`RemoteError`: a `ServeError` as a typed value that crosses a process boundary (a Ray replica, a Modal container).

Why this module exists: exceptions do not survive every transport intact, so a container's worker
answers an error as a value and the ingress raises it again. The value is a frozen, validated
dataclass — which error (`ErrorKind`), its message, its `Retry-After` — that pickles (Ray, Modal's
Python-to-Python calls) and also turns into plain data and back (`to_plain` / `from_plain`) for a
transport that carries only JSON-like values. The kind maps to its `ServeError` class through one
explicit table, never by looking a name up; a kind this side does not know (a container running
other code) becomes a 503, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from core.serving.errors import (AdminDisabled, BackendUnavailable, InvalidExperiment, InvalidInput, ModelFailed,
                                 ModelUnavailable, Overloaded, PayloadTooLarge, RegistryReadOnly, RegistryUnavailable,
                                 ServeError, UnknownExperiment, UpstreamTimeout)


class ErrorKind(str, Enum):
    """Which `ServeError` a remote error is; the values are the errors' `error_type`s (what clients see)."""

    INTERNAL = "internal_error"
    UNKNOWN_EXPERIMENT = "unknown_experiment"
    INVALID_INPUT = "invalid_input"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MODEL_UNAVAILABLE = "model_unavailable"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"
    MODEL_FAILED = "model_failed"
    INVALID_EXPERIMENT = "invalid_experiment"
    REGISTRY_READ_ONLY = "registry_read_only"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    ADMIN_DISABLED = "admin_disabled"


#: The one mapping kind → error class (and, inverted, class → kind).
ERROR_CLASSES: dict[ErrorKind, type[ServeError]] = {
    ErrorKind.INTERNAL: ServeError,
    ErrorKind.UNKNOWN_EXPERIMENT: UnknownExperiment,
    ErrorKind.INVALID_INPUT: InvalidInput,
    ErrorKind.PAYLOAD_TOO_LARGE: PayloadTooLarge,
    ErrorKind.MODEL_UNAVAILABLE: ModelUnavailable,
    ErrorKind.BACKEND_UNAVAILABLE: BackendUnavailable,
    ErrorKind.TIMEOUT: UpstreamTimeout,
    ErrorKind.OVERLOADED: Overloaded,
    ErrorKind.MODEL_FAILED: ModelFailed,
    ErrorKind.INVALID_EXPERIMENT: InvalidExperiment,
    ErrorKind.REGISTRY_READ_ONLY: RegistryReadOnly,
    ErrorKind.REGISTRY_UNAVAILABLE: RegistryUnavailable,
    ErrorKind.ADMIN_DISABLED: AdminDisabled,
}
KINDS: dict[type[ServeError], ErrorKind] = {cls: kind for kind, cls in ERROR_CLASSES.items()}


@dataclass(frozen=True)
class RemoteError:
    """One error a remote worker answered: its kind, message and optional `Retry-After` seconds."""

    kind: ErrorKind
    message: str
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ErrorKind):
            raise TypeError(f"RemoteError.kind: {self.kind!r}; allowed: an ErrorKind ({', '.join(k.value for k in ErrorKind)})")
        if not isinstance(self.message, str):
            raise TypeError(f"RemoteError.message: {type(self.message).__name__}; allowed: a string")
        if self.retry_after_s is not None and (
                isinstance(self.retry_after_s, bool) or not isinstance(self.retry_after_s, (int, float))
                or not math.isfinite(self.retry_after_s) or self.retry_after_s < 0):
            raise ValueError(f"RemoteError.retry_after_s: {self.retry_after_s!r}; allowed: None or finite seconds ≥ 0")

    @classmethod
    def of(cls, exc: ServeError) -> "RemoteError":
        """The value of an error; a subclass without a kind of its own travels as its nearest ancestor's kind."""
        kind = next(KINDS[base] for base in type(exc).__mro__ if base in KINDS)
        return cls(kind, exc.message, exc.retry_after_s)

    def to_error(self) -> ServeError:
        """The error again, of its kind's class, with the same message and `Retry-After`."""
        return ERROR_CLASSES[self.kind](self.message, self.retry_after_s)

    def to_plain(self) -> dict[str, Any]:
        """Plain data (str, float, None): `{"kind", "message", "retry_after_s"}`."""
        return {"kind": self.kind.value, "message": self.message, "retry_after_s": self.retry_after_s}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> "RemoteError":
        """The value back from `to_plain`'s data; anything else raises `ValueError` naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"remote error: {type(data).__name__}; allowed: a mapping with kind, message, retry_after_s")
        try:
            kind = ErrorKind(data.get("kind"))
        except ValueError:
            raise ValueError(f"remote error kind {data.get('kind')!r}; allowed: one of "
                             f"{', '.join(k.value for k in ErrorKind)}") from None
        try:
            return cls(kind, data.get("message"), data.get("retry_after_s"))  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(str(exc)) from None


def error_from_answer(value: object, worker: str) -> ServeError:
    """The error a worker answered, as a `RemoteError` or its plain data; an answer this side cannot read
    (an unknown kind, a malformed value: a container running other code) is a 503 that says so."""
    if isinstance(value, RemoteError):
        return value.to_error()
    try:
        return RemoteError.from_plain(value).to_error()  # type: ignore[arg-type]
    except ValueError as exc:
        return BackendUnavailable(f"the {worker} answered an error this server cannot read ({exc}); "
                                  "is it running another version? retry")

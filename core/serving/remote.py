"""The ingress's end of a model running in a remote container (a Ray replica, a Modal container).

Why this module exists: exceptions do not survive every transport intact, so a container's worker
(core.serving.worker) answers errors as typed values (`RemoteError`, core.serving.remote_error), and
the ingress turns what happened into what the client sees: no answer in time → 504, a failed
transport → 503, an error value → that very error again, a container that started for this request →
its cold start. Both backends' ingresses use it; it needs no model stack.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable

from core.serving.errors import BackendUnavailable, ServeError, UpstreamTimeout
from core.serving.prediction import ColdStart, Prediction, StreamingPrediction
from core.serving.remote_error import RemoteError, error_from_answer
from core.serving.streaming import Guarded, StreamItem, aclose


def error_value(exc: ServeError) -> dict[str, RemoteError]:
    """A worker's answer for an error: `{"error": RemoteError}`."""
    return {"error": RemoteError.of(exc)}


def is_error_value(value: object) -> bool:
    """The value is a worker's error (`error_value`), not an answer or a stream's item."""
    return isinstance(value, dict) and "error" in value


def raise_error_value(value: dict[str, object], worker: str = "worker") -> None:
    """Raise the ServeError a worker returned as a value (no-op when the answer holds no error)."""
    if is_error_value(value):
        raise error_from_answer(value["error"], worker)


async def await_worker(call: Awaitable[Any], experiment_id: str, timeout_s: float, worker: str,
                       timeout_error: ServeError | None = None) -> dict[str, Any]:
    """Await a worker's answer and raise what it means for the client: no answer in time → 504, or
    `timeout_error` when the caller knows better (the remote call is cancelled where it can be), a
    failed transport → 503, an error value → that error."""
    try:
        result = await asyncio.wait_for(call, timeout=timeout_s)
    except TimeoutError:
        cancel = getattr(call, "cancel", None)
        if callable(cancel):
            cancel()
        if timeout_error is not None:
            raise timeout_error from None
        raise UpstreamTimeout(
            f"{experiment_id}: no {worker} answered within {timeout_s:g}s "
            "(HYBRID_COLD_START_TIMEOUT_S); it may still be starting, retry later"
        ) from None
    except ServeError:
        raise
    except Exception as exc:  # the worker died mid-request, the deployment is gone, ...
        raise BackendUnavailable(f"{experiment_id}: the {worker} failed ({type(exc).__name__}); retry") from None
    raise_error_value(result, worker)
    return result


def answered_prediction(result: dict[str, Any], request_at: float) -> Prediction:
    """The worker's prediction; for a request that waited for its container to start, the start's
    timing (replica start and model load) and `cold_load` — the container's first answer marks it."""
    prediction: Prediction = result["prediction"]
    if result.get("precision") is not None:  # the precision the container's model runs in, for /experiments
        prediction = replace(prediction, precision=result["precision"])
    cold = result.get("cold_start")
    if not cold:
        return prediction
    total_s = max(0.0, cold["ready_at"] - request_at)
    cold_start = ColdStart(max(0.0, cold["started_at"] - request_at), cold["model_load_s"], total_s, bool(cold["first"]),
                           cold.get("imports_s"))
    return replace(prediction, cold_load=True, load_ms=total_s * 1000, cold_start=cold_start)


async def streamed_prediction(items: AsyncIterator[Any], experiment_id: str, timeout_s: float, worker: str,
                              request_at: float, timeout_error: ServeError | None = None) -> StreamingPrediction:
    """A worker's stream (`RemoteWorker.stream`, through the backend's transport) as the request path
    takes it: its first item awaited as `await_worker` awaits an answer (the same errors), then its
    items, an error value among them raised as that error. Closed early, the transport's stream is closed."""
    try:
        first = await await_worker(anext(items), experiment_id, timeout_s, worker, timeout_error)
    except BaseException:
        await aclose(items)
        raise

    async def ended(_: BaseException | None) -> None:
        await aclose(items)

    return StreamingPrediction(answered_prediction(first, request_at), Guarded(_values(items, worker), ended))


async def _values(items: AsyncIterator[Any], worker: str) -> AsyncIterator[StreamItem]:
    try:
        async for item in items:
            if isinstance(item, dict):
                raise_error_value(item, worker)
                continue
            yield item
    except (ServeError, asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:  # the worker died midway, its deployment went, ...: as `await_worker` says it
        raise BackendUnavailable(f"the {worker} failed while streaming ({type(exc).__name__}); retry") from None

"""Calls to an experiment's replicas through its deployment handle: one answer, or a stream of items.

Why this module exists: a call holds its pool's handle while it runs (handles.py closes handles of
pools at zero, so a handle in use must say so), touches the pool's idle clock when it ends
(idle_pools.py), remembers a model that failed to load for /experiments, and tells its ticket
(in_flight.py) when Serve has given it to a running replica — the end of any cold start. A streamed
generation does all of that until its last item, and a stream left early is cancelled in the replica.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from backends.local_ray.handles import Handles
from backends.local_ray.idle_pools import IdlePools
from backends.local_ray.in_flight import Ticket
from core.serving.errors import ModelUnavailable
from core.serving.remote import await_worker, streamed_prediction
from core.serving.scrub import scrub
from core.serving.streaming import Guarded
from core.serving.prediction import StreamingPrediction


async def _answer(call: Any, ticket: Ticket | None) -> Any:
    """A deployment handle call's answer; `ticket` learns when Serve has given the call to a running
    replica (the end of any cold start). Cancelled, the call is cancelled too."""
    try:
        await call._fetch_future_result_async()  # Serve's assignment: no public way to await it alone
        if ticket is not None:
            ticket.take()
        return await call
    except asyncio.CancelledError:
        call.cancel()
        raise


async def _streamed(call: Any, ticket: Ticket | None) -> AsyncIterator[Any]:
    """A streaming handle call's items; `ticket` as in `_answer`. Left before its end (the client hung up),
    the call is cancelled: the replica's generation stops."""
    finished = False
    try:
        await call._fetch_future_result_async()
        if ticket is not None:
            ticket.take()
        async for item in call:
            yield item
        finished = True
    finally:
        if not finished:
            call.cancel()


class ReplicaCalls:
    def __init__(self, handles: Handles, idle_pools: IdlePools, load_errors: dict[str, str]):
        self.handles = handles
        self.idle_pools = idle_pools
        #: The model failed to load in its replica, last we heard (by experiment).
        self.load_errors = load_errors

    async def predict(self, experiment_id: str, inputs: list[str], params: Any, request_at: float, timeout_s: float,
                      ticket: Ticket | None = None) -> dict[str, Any]:
        """The replica's answer (`RemoteWorker.predict`), its error value raised."""
        handle = self.handles.acquire(experiment_id)
        try:
            call = handle.predict.remote(inputs, params, request_at)
            return await await_worker(_answer(call, ticket), experiment_id, timeout_s, "replica")
        except ModelUnavailable as exc:
            self.load_errors[experiment_id] = scrub(exc.message)
            raise
        finally:
            self._done(experiment_id)

    async def stream(self, experiment_id: str, prompt: str, params: Any, request_at: float, timeout_s: float,
                     ticket: Ticket | None = None) -> StreamingPrediction:
        """A replica's streamed generation (`RemoteWorker.stream`), once it has started; the handle is held
        until the stream ends or is closed."""
        handle = self.handles.acquire(experiment_id)
        try:
            call = handle.options(stream=True).stream.remote(prompt, params, request_at)
            streaming = await streamed_prediction(_streamed(call, ticket), experiment_id, timeout_s, "replica", request_at)
        except BaseException as exc:
            if isinstance(exc, ModelUnavailable):
                self.load_errors[experiment_id] = scrub(exc.message)
            self._done(experiment_id)
            raise

        async def ended(_: BaseException | None) -> None:
            self._done(experiment_id)

        return StreamingPrediction(streaming.start, Guarded(streaming.items, ended))

    def _done(self, experiment_id: str) -> None:
        self.handles.release(experiment_id)
        self.idle_pools.served(experiment_id)

"""The ingress's requests on their way to a replica, and what ends them before a replica answers.

Why this module exists: on Ray a request spends a cold start waiting — for a start slot, for its
pool to be deployed or swapped, in the deployment handle's queue until a replica runs — and two
events must end that wait at once rather than after HYBRID_COLD_START_TIMEOUT_S: its experiment
retired (404: it will never be served) and the server stopping (503 + Retry-After: retry elsewhere).
A request a replica has taken runs on: a retirement lets it finish (should the pool's deletion fail
it nonetheless, it answers 404 too, not 503), a stop gives it HYBRID_SHUTDOWN_TIMEOUT_S (`drain`)
and then answers it 503 — so every client has its status before Serve goes down. A streamed
generation stays in flight until its last token: a stop lets it finish within the same deadline, then
ends it with an `error` event (503) rather than cutting the connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from core.serving.prediction import StreamingPrediction
from core.serving.streaming import Guarded, aclose, close_if_orphaned
from core.serving.errors import BackendUnavailable, Overloaded, ServeError, UnknownExperiment, UpstreamTimeout

T = TypeVar("T")

#: A request refused because the server stops may come back (to another instance) after this long.
RETRY_AFTER_STOP_S = 1.0
#: Requests ended by a stop unwind at once; this bounds the wait for their answers all the same.
ANSWERED_S = 5.0


def retired_error(experiment_id: str, ran: bool) -> UnknownExperiment:
    when = "while a replica ran this request" if ran else "while this request waited for a replica"
    return UnknownExperiment(f"experiment {experiment_id!r} was retired {when} (GET /experiments lists them)")


def stopping_error(why: str) -> Overloaded:
    return Overloaded(f"the server is shutting down{why}; retry on another instance", retry_after_s=RETRY_AFTER_STOP_S)


class Ticket:
    """One request: whether a replica has taken it, whether its experiment was retired meanwhile, and
    the error that ends it early (set at most once)."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        self.taken = False
        self.retired = False
        self.ended: asyncio.Future[ServeError] = asyncio.get_running_loop().create_future()

    def take(self) -> None:
        """A replica has the request (its cold start, if any, is over): only a stop's deadline ends it now."""
        self.taken = True

    def end(self, error: ServeError) -> None:
        if not self.ended.done():
            self.ended.set_result(error)


class InFlight:
    def __init__(self) -> None:
        self._tickets: set[Ticket] = set()
        self._none = asyncio.Event()
        self._none.set()
        self.stopping = False

    def __len__(self) -> int:
        return len(self._tickets)

    async def run(self, experiment_id: str, work: Callable[[Ticket], Awaitable[T]]) -> T:
        """`work(ticket)` (which calls `ticket.take()` once a replica has the request), unless its
        experiment is retired or the server stops while it waits — then the error that says so."""
        if self.stopping:
            raise stopping_error("")
        ticket = Ticket(experiment_id)
        self._tickets.add(ticket)
        self._none.clear()
        task = asyncio.ensure_future(work(ticket))
        followed = False
        try:
            await asyncio.wait({task, ticket.ended}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.cancel()  # it unwinds at once: the handle call is cancelled, a deploy runs on unawaited
                close_if_orphaned(task)  # ... and a stream it started meanwhile is closed
                await asyncio.gather(task, return_exceptions=True)
                raise ticket.ended.result()
            try:
                result = task.result()
            except (BackendUnavailable, UpstreamTimeout):  # its pool was deleted under it
                if ticket.retired:
                    raise retired_error(experiment_id, ran=True) from None
                raise
            if isinstance(result, StreamingPrediction):  # in flight until its last token
                items = result.items

                async def ended(_: BaseException | None) -> None:
                    # the replica's stream closes here, however the stream ended — also when it was closed
                    # before its first item (a client gone during the cold start), which a generator's own
                    # `finally` would miss, leaving the pool's handle held and its requests counted for good
                    try:
                        await aclose(items)
                    finally:
                        self._release(ticket)

                result, followed = replace(result, items=Guarded(_until_ended(items, ticket), ended)), True
            return result
        except asyncio.CancelledError:  # the client hung up
            task.cancel()
            close_if_orphaned(task)
            raise
        finally:
            if not followed:
                self._release(ticket)

    def _release(self, ticket: Ticket) -> None:
        self._tickets.discard(ticket)
        if not self._tickets:
            self._none.set()

    def retire(self, experiment_id: str) -> None:
        """The experiment was removed: its waiting requests answer 404 now; running ones finish."""
        for ticket in [t for t in self._tickets if t.experiment_id == experiment_id]:
            ticket.retired = True
            if not ticket.taken:
                ticket.end(retired_error(experiment_id, ran=False))

    def stop_taking(self) -> None:
        """The server stops: new requests and those still waiting for a replica answer 503 now."""
        self.stopping = True
        for ticket in [t for t in self._tickets if not t.taken]:
            ticket.end(stopping_error(""))

    async def drain(self, timeout_s: float) -> int:
        """Give the requests replicas are running `timeout_s` to finish (after `stop_taking`), then
        answer those left 503 and wait until their answers are out. How many were cut short."""
        try:
            await asyncio.wait_for(self._none.wait(), timeout_s)
            return 0
        except TimeoutError:
            pass
        left = list(self._tickets)
        for ticket in left:
            ticket.end(stopping_error(f" and this request did not finish within {timeout_s:g}s (HYBRID_SHUTDOWN_TIMEOUT_S)"))
        try:
            await asyncio.wait_for(self._none.wait(), ANSWERED_S)
        except TimeoutError:
            pass
        return len(left)


async def _until_ended(items: AsyncIterator[Any], ticket: Ticket) -> AsyncIterator[Any]:
    """A stream's items until they end — or until its ticket is ended (a stop's deadline), which raises
    the ticket's error for the stream's `error` event. The stream itself is closed by its `Guarded`'s end
    (`InFlight.run`): the generation stops there."""
    reading: asyncio.Future[Any] | None = None
    try:
        while True:
            reading = asyncio.ensure_future(anext(items))
            await asyncio.wait({reading, ticket.ended}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                raise ticket.ended.result()
            try:
                item = reading.result()
            except StopAsyncIteration:
                return
            yield item
    finally:  # ended, closed, or its reader cancelled (the client hung up): no read left pending
        if reading is not None and not reading.done():
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

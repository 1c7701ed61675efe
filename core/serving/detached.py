"""Blocking calls to a service that may hang (an MLflow tracking server), each on a daemon thread of
its own, waited for with a bound.

Why this module exists: a client library's call can block for minutes when its server accepts a
connection and never answers. Run on a shared pool (asyncio's default executor, the model loader's
threads), a hung call holds a worker that registry reads or other loads need, and — pool threads not
being daemons — keeps the process from exiting on Ctrl-C. Here each call runs on a daemon thread;
its caller waits at most `timeout_s` (`CallTimedOut`) and leaves the thread behind; concurrent calls
under one `key` share one thread (a server that hangs costs one thread per source, not one per
poll); and `stop_all()`, when the process stops, releases every waiter at once (`CallAbandoned`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import Future, InvalidStateError
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class CallTimedOut(TimeoutError):
    """The call gave no answer within its bound (it may still be running, on its own thread)."""


class CallAbandoned(Exception):
    """The process is stopping: nobody waits for the call any more."""


class DetachedCalls:
    def __init__(self, name: str = "detached") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running: dict[object, Future[object]] = {}  # by key, or by the future itself without one
        self._stopped = False
        _INSTANCES.add(self)

    def _start(self, fn: Callable[[], T], key: Hashable | None) -> Future[T]:
        with self._lock:
            if self._stopped:
                raise CallAbandoned(f"{self.name}: the process is stopping")
            if key is not None and key in self._running:
                return self._running[key]  # type: ignore[return-value]
            future: Future[T] = Future()
            future.set_running_or_notify_cancel()  # running: a waiter that gives up cannot cancel it for the others
            slot = key if key is not None else future
            self._running[slot] = future  # type: ignore[assignment]

        def run() -> None:
            try:
                outcome: tuple[bool, object] = (True, fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiters, whatever it is
                outcome = (False, exc)
            with self._lock:
                if self._running.get(slot) is future:
                    del self._running[slot]
            try:
                future.set_result(outcome[1]) if outcome[0] else future.set_exception(outcome[1])  # type: ignore[arg-type]
            except InvalidStateError:  # abandoned meanwhile
                pass

        threading.Thread(target=run, name=f"{self.name}-call", daemon=True).start()
        return future

    def call(self, fn: Callable[[], T], timeout_s: float | None = None, key: Hashable | None = None) -> T:
        """`fn()` on a daemon thread, waited for here (blocking) at most `timeout_s` seconds."""
        future = self._start(fn, key)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            if not future.done():
                raise CallTimedOut(f"no answer within {timeout_s:g}s") from None
            return future.result()

    async def acall(self, fn: Callable[[], T], timeout_s: float | None = None, key: Hashable | None = None) -> T:
        """`fn()` on a daemon thread, awaited at most `timeout_s` seconds; a cancelled waiter leaves it running."""
        future = self._start(fn, key)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            if not future.done():
                raise CallTimedOut(f"no answer within {timeout_s:g}s") from None
            return future.result()

    def running(self) -> int:
        """Calls whose threads have not finished yet (waited for or not)."""
        with self._lock:
            return len(self._running)

    def stop(self) -> None:
        """The process stops: every waiter gets `CallAbandoned` now, and so does every later call.
        The threads are left to end on their own (daemons: they never hold the process's exit)."""
        with self._lock:
            self._stopped = True
            futures, self._running = list(self._running.values()), {}
        for future in futures:
            try:
                future.set_exception(CallAbandoned(f"{self.name}: the process is stopping"))
            except InvalidStateError:
                pass


_INSTANCES: weakref.WeakSet[DetachedCalls] = weakref.WeakSet()


def stop_all() -> None:
    """The process stops (the main job's Ctrl-C): stop every `DetachedCalls` of the process."""
    for calls in list(_INSTANCES):
        calls.stop()

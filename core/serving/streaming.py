"""A streamed generation: its tokens as the model makes them, and the stop a client's hang-up sends.

Why this module exists: a text-generation request with `"stream": true` is answered token by token,
so its first words arrive after one step of the model instead of the whole text. The model runs on
the inference thread; `TokenPipe` carries what it makes to the event loop that answers the client —
`Token`s, then one `StreamEnd` (or the error that ended it) — and carries back the `stop` a client
that hung up sends, so the generation ends at its next token and its slot on the inference thread is
free. The items are plain dataclasses: they cross a Ray or Modal boundary as they are.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from core.serving.errors import ModelFailed, Overloaded


@dataclass(frozen=True)
class Token:
    """The next piece of generated text (one or more tokens, decoded as soon as they read as text)."""

    text: str


@dataclass(frozen=True)
class StreamEnd:
    """The generation is over: its whole text (prompt included, as a non-streamed answer gives it)."""

    generated_text: str
    tokens: int  # tokens generated
    inference_ms: float  # from the generation's start on the inference thread to its end
    stopped: bool = False  # ended by a stop (the client hung up), not by the model


StreamItem = Token | StreamEnd

#: What the model's streaming call is given: where each piece of text goes, and the stop to honour.
Emit = Callable[[str], None]


class OpenStreams:
    """Streams open per experiment — waiting for the inference thread or generating — bounded as a
    batcher's queue is (HYBRID_MAX_QUEUE): one more is refused with 503 + Retry-After."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[str, int] = {}

    def take(self, experiment_id: str) -> Callable[[], None]:
        """Count one more open stream of the experiment; the function that releases it (once)."""
        if self._open.get(experiment_id, 0) >= self.limit:
            raise Overloaded(f"{experiment_id}: {self.limit} streams already open (HYBRID_MAX_QUEUE); retry shortly",
                             retry_after_s=1)
        self._open[experiment_id] = self._open.get(experiment_id, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[experiment_id] -= 1

        return release


async def aclose(items: object) -> None:
    """Close an async iterator that can be closed (a generator, a `Guarded`, a transport's stream)."""
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()


def close_if_orphaned(task: "asyncio.Future[object]") -> None:
    """For a task whose caller has left: once it ends, a stream it started (an answer with `items`) is
    closed — its generation stops and what it holds is released — since nobody will read it."""

    def closed(done: "asyncio.Future[object]") -> None:
        if done.cancelled() or done.exception() is not None:
            return
        items = getattr(done.result(), "items", None)
        if items is not None:
            asyncio.ensure_future(aclose(items))

    task.add_done_callback(closed)


class _Started:
    """The inference thread took the generation up (the end of its wait for the thread)."""


class TokenPipe:
    """From the inference thread (`started`, `emit`, `end`, `fail`) to the event loop (`items`), and
    `stop` back. Made on the event loop that reads it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Started | StreamItem | BaseException] = asyncio.Queue()
        self.stop = threading.Event()
        self.created = time.perf_counter()
        self.started_after_s: float | None = None

    # --- the inference thread's side ----------------------------------------------------------
    def _put(self, item: _Started | StreamItem | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            self.stop.set()

    def started(self) -> None:
        self.started_after_s = time.perf_counter() - self.created
        self._put(_Started())

    def emit(self, text: str) -> None:
        if text:
            self._put(Token(text))

    def end(self, end: StreamEnd) -> None:
        self._put(end)

    def fail(self, error: BaseException) -> None:
        self._put(error)

    # --- the event loop's side ----------------------------------------------------------------
    async def wait_started(self) -> None:
        """Until the inference thread takes the generation up (or fails before it could)."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, _Started), item

    async def items(self) -> AsyncIterator[StreamItem]:
        """The tokens, then the end; the error that ended the generation is raised. Left early (the client
        hung up, the caller stopped reading), the generation is stopped."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Started):
                    continue
                yield item
                if isinstance(item, StreamEnd):
                    return
        finally:
            self.stop.set()


class Guarded:
    """`items` with `on_end(error)` run exactly once: after the last item (error None), when reading fails
    (that error), or at `aclose()` (GeneratorExit) — also for a stream never read, which an async
    generator's own `finally` would miss. Each layer a stream crosses (engine, worker, transport,
    request path) guards what it holds this way, so a client that leaves at any moment releases it all."""

    def __init__(self, items: AsyncIterator[StreamItem], on_end: Callable[[BaseException | None], Awaitable[None]]):
        self._items = items
        self._on_end = on_end
        self._ended = False
        #: The last item read (a `StreamEnd` once the stream was read to its end).
        self.last: StreamItem | None = None

    def __aiter__(self) -> "Guarded":
        return self

    async def __anext__(self) -> StreamItem:
        if self._ended:
            raise StopAsyncIteration
        try:
            self.last = await self._items.__anext__()
        except StopAsyncIteration:
            await self._end(None)
            raise
        except BaseException as exc:
            await self._end(exc)
            raise
        return self.last

    async def aclose(self) -> None:
        await self._end(GeneratorExit())

    async def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            await aclose(self._items)
        finally:
            await self._on_end(error)


async def start_generation(executor: Executor, generate: Callable[..., tuple[str, int]], prompt: str, params: Any,
                           release: Callable[[], None]) -> tuple[float, Guarded]:
    """Run `generate(prompt, params, emit, stop)` on `executor` (the inference thread); once the thread has
    taken it up: how long it waited for the thread, and its items. `release` (what the caller holds for
    the stream) runs when the stream ends; if it never starts, the caller releases it."""
    pipe = TokenPipe()
    queued = asyncio.get_running_loop().run_in_executor(executor, _generate, generate, prompt, params, pipe)
    queued.add_done_callback(lambda f: f.cancelled() and pipe.fail(  # the engine closed before the thread took it
        Overloaded("the server is shutting down: this stream never started; retry", retry_after_s=1)))
    try:
        await pipe.wait_started()
    except BaseException:  # the client left while it waited for the thread: it never starts
        pipe.stop.set()
        raise

    async def ended(_: BaseException | None) -> None:
        pipe.stop.set()  # a generation still running stops at its next token
        release()

    return pipe.started_after_s or 0.0, Guarded(pipe.items(), ended)


def _generate(generate: Callable[..., tuple[str, int]], prompt: str, params: Any, pipe: TokenPipe) -> None:
    """The inference thread's part of a stream: the whole generation, its pieces through `pipe`."""
    if pipe.stop.is_set():  # the reader left while this waited for the thread
        pipe.fail(Overloaded("the stream was stopped before it started", retry_after_s=1))
        return
    pipe.started()
    began = time.perf_counter()
    try:
        text, tokens = generate(prompt, params, pipe.emit, pipe.stop)
    except Exception as exc:
        pipe.fail(ModelFailed(f"the model failed while generating ({type(exc).__name__}: {str(exc)[:200]})"))
        return
    pipe.end(StreamEnd(text, tokens, (time.perf_counter() - began) * 1000, stopped=pipe.stop.is_set()))

"""A streamed generation over HTTP: server-sent events, and a hang-up that stops the model.

Why this module exists: a `"stream": true` answer is `text/event-stream` — a `start` event (cold or
warm, the window and why, the wait), one `token` event per piece of text, then `end` (the whole text,
the timing) or `error` (the JSON error shape, when the model fails midway). The response watches the
connection while it streams: a client that hangs up closes the stream at once, which stops the
generation at its next token and frees the model for the next request — whether or not a token was
due to be sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import aclosing
from typing import Any, AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.http.error_shape import error_body
from core.serving.errors import ServeError
from core.serving.stream_path import StreamAnswer
from core.serving.streaming import StreamEnd, Token

log = logging.getLogger("hybrid_serve.http")

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"x-accel-buffering", b"no")]


def event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def start_event(answer: StreamAnswer) -> bytes:
    start = answer.start
    return event("start", {
        "experiment_id": answer.experiment.id, "task": answer.experiment.task.value, "cold_load": start.cold_load,
        "replica": start.replica, "scaledown_window_s": answer.plan.window_s, "window_reason": answer.plan.reason.value,
        "timing": {"queue_ms": round(start.queue_ms, 3), "load_ms": round(start.load_ms, 3)},
    })


async def events(answer: StreamAnswer, started: float) -> AsyncIterator[bytes]:
    """The stream's events, the start first (`started`: the request's arrival, loop time); `EventStream`
    closes the stream however they end."""
    yield start_event(answer)
    async for chunk in _item_events(answer, started):
        yield chunk


async def _item_events(answer: StreamAnswer, started: float) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    first_token_ms: float | None = None
    try:
        async for item in answer.items:
            if isinstance(item, Token):
                if first_token_ms is None:
                    first_token_ms = (loop.time() - started) * 1000
                yield event("token", {"text": item.text})
            elif isinstance(item, StreamEnd):
                yield event("end", {
                    "generated_text": item.generated_text, "tokens": item.tokens,
                    "timing": {"first_token_ms": None if first_token_ms is None else round(first_token_ms, 3),
                               "inference_ms": round(item.inference_ms, 3),
                               "total_ms": round((loop.time() - started) * 1000, 3)},
                })
    except ServeError as exc:
        yield event("error", error_body(exc.error_type, exc.message))
    except Exception as exc:  # nothing else may end a stream whose headers are sent without its last event
        log.error("a stream failed midway: %s: %s", type(exc).__name__, exc)
        yield event("error", error_body("internal_error", "the stream failed midway; retry"))


class EventStream(Response):
    """The response that sends the answer's events, and closes its stream when the client hangs up."""

    media_type = "text/event-stream"

    def __init__(self, answer: StreamAnswer, started: float):
        super().__init__(status_code=200)
        self.answer = answer
        self.body_events = events(answer, started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with aclosing(self.body_events) as body:
                sending = asyncio.ensure_future(self._send_all(body, send))
                hang_up = asyncio.ensure_future(_disconnected(receive))
                try:
                    await asyncio.wait({sending, hang_up}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (sending, hang_up):
                        task.cancel()
                    await asyncio.gather(sending, hang_up, return_exceptions=True)
                if sending.done() and not sending.cancelled() and sending.exception() is not None:
                    raise sending.exception()  # type: ignore[misc]
        finally:  # however this ends — also before the events began — the stream is closed: the model stops
            await self.answer.items.aclose()

    @staticmethod
    async def _send_all(body: AsyncIterator[bytes], send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:  # the connection is gone (ASGI 2.4 servers say so on a send)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

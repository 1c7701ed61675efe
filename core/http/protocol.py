"""The HTTP/1.1 connection protocol, with a deadline for a request's headers.

Why this module exists: uvicorn limits the idle time between two requests of a kept-alive
connection, but not the time a client takes to send a request's headers — a client that opens
connections and drips a byte at a time (or nothing at all) holds them for ever. This is uvicorn's
own httptools protocol with one timer more: from a connection's opening, and from the first byte
of each request, the headers must be complete within `HYBRID_HEADER_TIMEOUT_S`, or the connection
is closed. (A stalled *body* is the `BodyLimits` middleware's 408.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def header_deadline_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's `http=` protocol class, closing connections whose headers take over `timeout_s`."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol

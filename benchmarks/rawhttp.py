"""A minimal keep-alive HTTP/1.1 client for latency benchmarks.

Why it exists: a general-purpose client (http.client, httpx) spends ~0.2–0.5 ms of Python per
request parsing headers, which would be charged to the server. This one sends prebuilt bytes and
reads exactly Content-Length bytes back, so the time measured is the server's.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit


class RawHTTP:
    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((self.host, self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def prepare_post(self, path: str, payload: Any) -> bytes:
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return head + body

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one prepared request; return (status, body)."""
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self.sock.recv(65536)
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        body, self._buffer = rest[:length], rest[length:]
        return status, body

    def close(self) -> None:
        self.sock.close()


def connect_when_listening(url: str, timeout_s: float = 60) -> RawHTTP:
    """A connection to a server still starting: retried until it listens (or `timeout_s` passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return RawHTTP(url)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

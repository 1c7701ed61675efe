"""Reading a server-sent event stream in tests: (event, data) pairs as they arrive."""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx


def read_sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (event, JSON data) pairs of a `text/event-stream` response, as they arrive."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = line[len("data: "):]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""

"""Where `hybrid-serve recommend` reads traffic from: a running endpoint, a traffic recording, a trace.

Why this module exists: advice is only as good as the traffic it replays, and users have it in three
places — an endpoint that records by default (`GET /traffic`), the recording's folder itself
(`HYBRID_TRAFFIC_DIR`, or a copy fetched from Modal's traffic Volume), or a trace file the simulator
already reads. Each becomes the same time-ordered list of requests (arrival, experiment, duration);
requests refused for their input never reached the window policy and are left out.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import httpx

from core.events import recorded_arrivals
from core.recording import Limits, Recording
from core.sim.traces import Request, TraceError, TraceFormat, detect_format, read_requests

#: A request to a remote endpoint may stream a month of traffic: generous, not endless.
FETCH_TIMEOUT_S = 300.0


class SourceError(ValueError):
    """The traffic could not be read (the message says where and why)."""


@dataclass(frozen=True)
class SourcedRequests:
    """Requests in time order, and where they came from (in words)."""

    requests: list[Request]
    source: str


def from_records(records: Iterable[dict[str, Any]], source: str, since: float | None = None) -> SourcedRequests:
    """The arrivals the window policy saw in recording lines (core.events.recorded_arrivals)."""
    arrivals = recorded_arrivals(records, since)
    return SourcedRequests([Request(at, experiment, duration) for at, experiment, duration in arrivals], source)


def from_recording(folder: Path, since: float | None = None) -> SourcedRequests:
    if not folder.is_dir():
        raise SourceError(f"{folder}: no traffic recording there (HYBRID_TRAFFIC_DIR, or --recording a folder)")
    return from_records(Recording(folder, Limits(0, 0)).read(since), f"the recording in {folder}", since)


def from_endpoint(url: str, token: str | None, since: float | None = None) -> SourcedRequests:
    """`GET /traffic` of a running endpoint (the token: HYBRID_API_TOKEN's, when it asks for one). The
    token goes over https, or over plain http to this machine only: never in clear text across a network."""
    endpoint = url.rstrip("/") + "/traffic"
    parsed = httpx.URL(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SourceError(f"{url}: not an http(s) URL (e.g. http://127.0.0.1:8000)")
    if token and parsed.scheme == "http" and not _loopback(parsed.host):
        raise SourceError(f"{url}: HYBRID_API_TOKEN is set and would cross the network in clear text; "
                          "use the endpoint's https:// URL (plain http only to this machine)")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {} if since is None else {"since": since}
    try:
        with httpx.stream("GET", endpoint, headers=headers, params=params, timeout=FETCH_TIMEOUT_S) as response:
            if response.status_code != 200:
                response.read()
                raise SourceError(f"{endpoint}: HTTP {response.status_code}: {_error_text(response)}")
            records = [json.loads(line) for line in response.iter_lines() if line.strip()]
    except httpx.HTTPError as exc:
        raise SourceError(f"{endpoint}: {type(exc).__name__}: {exc or 'no answer'}") from None
    except ValueError as exc:
        raise SourceError(f"{endpoint}: not a traffic recording ({exc})") from None
    return from_records(records, endpoint, since)


def from_trace(path: Path, trace_format: str | None = None) -> SourcedRequests:
    try:
        fmt = TraceFormat(trace_format) if trace_format else detect_format(path)
        requests = list(read_requests(path, fmt))
    except TraceError as exc:
        raise SourceError(str(exc)) from None
    except ValueError:
        raise SourceError(f"--format {trace_format!r}: choose one of {', '.join(TraceFormat)}") from None
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    return SourcedRequests(requests, f"the trace {path}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase

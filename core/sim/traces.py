"""Request traces for the keep-warm simulator, read as streams (memory independent of their length).

Why this module exists: users choose windows from real traffic. Three formats are read, detected
from the header when not named:

- `azure-functions-2019`: `HashFunction,HashApp,HashOwner,minute_1..minute_N` — per-minute
  invocation counts, one function = one experiment (Shahrad et al., ATC 2020);
- `azure-llm-2023`: `TIMESTAMP,ContextTokens,GeneratedTokens` — one row per request of one service
  (Patel et al., ISCA 2024), read as the single experiment `conversation`;
- `csv`: `timestamp,experiment_id[,duration_ms]` — seconds (or ISO 8601) per request, in time order;
  what the local backend's event log exports (`hybrid-serve export-requests`).

A malformed file raises `TraceError` naming the file, the line and the reason.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Iterator, NamedTuple

LLM_EXPERIMENT = "conversation"
#: The 2019 trace's requests of one minute are sorted at once up to this many (else merged: less memory).
SORTED_MINUTE_MAX = 200_000
#: The LLM trace has no execution times: a request is taken to last this long per generated token.
MS_PER_GENERATED_TOKEN = 20.0


class TraceFormat(StrEnum):
    AZURE_FUNCTIONS_2019 = "azure-functions-2019"
    AZURE_LLM_2023 = "azure-llm-2023"
    CSV = "csv"


class TraceError(ValueError):
    def __init__(self, path: Path, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass(frozen=True)
class MinuteSeries:
    """One experiment's invocations per minute: (minute, count) in increasing minute order, count ≥ 1."""

    experiment_id: str
    minutes: list[tuple[int, int]]


class Request(NamedTuple):
    """One request of a trace: when (seconds), for which experiment, and how long it runs (None: the
    trace does not say). A named tuple: a replay makes millions (a frozen dataclass's construction cost
    a tenth of fine mode's time)."""

    time_s: float
    experiment_id: str
    duration_s: float | None = None


def detect_format(path: Path) -> TraceFormat:
    header = _header(path)
    if header[:3] == ["HashFunction", "HashApp", "HashOwner"] and len(header) > 3 and header[3] == "minute_1":
        return TraceFormat.AZURE_FUNCTIONS_2019
    if header[:3] == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
        return TraceFormat.AZURE_LLM_2023
    if header[:2] == ["timestamp", "experiment_id"]:
        return TraceFormat.CSV
    raise TraceError(path, 1, f"unknown header {','.join(header[:4])!r}: expected one of {', '.join(TraceFormat)}")


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except FileNotFoundError:
        raise TraceError(path, 0, "file not found") from None
    except UnicodeDecodeError:
        raise TraceError(path, 1, "not a UTF-8 text file") from None


def count_minutes(path: Path, fmt: TraceFormat) -> int:
    """Length of the trace in minutes (the 2019 trace's column count; else from first to last request)."""
    if fmt is TraceFormat.AZURE_FUNCTIONS_2019:
        return len(_header(path)) - 3
    first = last = None
    for request in read_requests(path, fmt):
        first = request.time_s if first is None else first
        last = request.time_s
    return 0 if first is None else int((last - first) // 60) + 1  # type: ignore[operator]


def read_minute_series(path: Path, fmt: TraceFormat) -> Iterator[MinuteSeries]:
    """Per-experiment minute counts. The 2019 trace streams row by row; request traces are binned
    into minutes from their first request (minute 1 = the first 60 s)."""
    if fmt is TraceFormat.AZURE_FUNCTIONS_2019:
        yield from _functions_minutes(path)
        return
    per_experiment: dict[str, list[tuple[int, int]]] = {}
    start: float | None = None
    for request in read_requests(path, fmt):
        start = request.time_s if start is None else start
        minute = int((request.time_s - start) // 60) + 1
        series = per_experiment.setdefault(request.experiment_id, [])
        if series and series[-1][0] == minute:
            series[-1] = (minute, series[-1][1] + 1)
        else:
            series.append((minute, 1))
    for experiment_id, minutes in per_experiment.items():
        yield MinuteSeries(experiment_id, minutes)


def _functions_minutes(path: Path) -> Iterator[MinuteSeries]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        width = len(header)
        for line, row in enumerate(reader, start=2):
            if len(row) != width:
                raise TraceError(path, line, f"{len(row)} columns, the header has {width}")
            try:  # most minutes are "0": only the others are parsed
                minutes = [(m, int(c)) for m, c in enumerate(row[3:], start=1) if c != "0"]
            except ValueError:
                bad = next(c for c in row[3:] if not c.strip().lstrip("-").isdigit())
                raise TraceError(path, line, f"invocation count {bad!r} is not an integer") from None
            if any(c < 0 for _, c in minutes):
                raise TraceError(path, line, "negative invocation count")
            yield MinuteSeries(row[0], [(m, c) for m, c in minutes if c])


def read_function_durations(path: Path) -> dict[str, float]:
    """Average execution time per function, seconds (function_durations.csv of the 2019 trace)."""
    out: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[row["HashFunction"]] = float(row["Average"]) / 1000
            except (KeyError, ValueError, TypeError):
                raise TraceError(path, line, "needs HashFunction and a numeric Average (ms)") from None
    return out


def read_requests(path: Path, fmt: TraceFormat) -> Iterator[Request]:
    """Requests in time order. The 2019 trace spreads each minute's n invocations evenly over the
    minute (at (k + 0.5) / n of it, k = 0..n-1), function by function merged in time order."""
    if fmt is TraceFormat.AZURE_FUNCTIONS_2019:
        yield from _spread_minutes(path)
        return
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        previous = -math.inf
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if fmt is TraceFormat.AZURE_LLM_2023:
                if len(row) != 3:
                    raise TraceError(path, line, f"expected 3 columns, got {len(row)}")
                t = _parse_time(path, line, row[0])
                try:
                    duration = int(row[2]) * MS_PER_GENERATED_TOKEN / 1000
                except ValueError:
                    raise TraceError(path, line, f"GeneratedTokens {row[2]!r} is not an integer") from None
                request = Request(t, LLM_EXPERIMENT, duration)
            else:
                if len(row) not in (2, 3):
                    raise TraceError(path, line, f"expected timestamp,experiment_id[,duration_ms], got {len(row)} columns")
                if not row[1]:
                    raise TraceError(path, line, "empty experiment_id")
                duration = None
                if len(row) == 3 and row[2]:
                    try:
                        duration = float(row[2]) / 1000
                    except ValueError:
                        raise TraceError(path, line, f"duration_ms {row[2]!r} is not a number") from None
                request = Request(_parse_time(path, line, row[0]), row[1], duration)
            if request.time_s < previous:
                raise TraceError(path, line, "timestamps must be in increasing order")
            previous = request.time_s
            yield request


def _parse_time(path: Path, line: int, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.strip()[:26]).timestamp()
    except ValueError:
        raise TraceError(path, line, f"timestamp {value!r} is neither seconds nor ISO 8601") from None


class TraceMinute(NamedTuple):
    """One minute of the 2019 trace: each function's invocations in it, spread evenly over the minute
    (`spread_time`). Fine mode replays a minute's run of one function at once where it can
    (core.sim.simulator), so the trace is handed over minute by minute, not request by request."""

    start_s: float
    counts: list[tuple[str, int]]  # (experiment_id, invocations ≥ 1), in the trace's row order

    def requests(self) -> Iterator[Request]:
        """The minute's requests in time order (ties: by experiment id) — sorted at once, or, for a
        minute of more than `SORTED_MINUTE_MAX` requests, merged function by function (memory ∝ functions)."""
        start, functions = self.start_s, self.counts
        if sum(count for _, count in functions) > SORTED_MINUTE_MAX:
            import heapq

            yield from heapq.merge(*(_spread(start, experiment_id, count) for experiment_id, count in functions))
            return
        spread = [Request(start + (k + 0.5) * 60 / count, experiment_id)  # `spread_time`, inline: per request
                  for experiment_id, count in functions for k in range(count)]
        spread.sort()
        yield from spread

    def last_s(self) -> float:
        """When its last request comes."""
        return max(spread_time(self.start_s, count - 1, count) for _, count in self.counts)

    def before(self, at: float, experiment_id: str) -> float | None:
        """When the request before (`at`, `experiment_id`) in `requests`' order comes, within this minute
        (None: it is the minute's first)."""
        start, latest = self.start_s, None
        for other, count in self.counts:
            k = min(count - 1, int((at - start) * count / 60))  # about the last before it, then exactly
            while k >= 0 and (spread_time(start, k, count), other) >= (at, experiment_id):
                k -= 1
            while k + 1 < count and (spread_time(start, k + 1, count), other) < (at, experiment_id):
                k += 1
            if k >= 0 and (latest is None or spread_time(start, k, count) > latest):
                latest = spread_time(start, k, count)
        return latest


def spread_time(start: float, k: int, count: int) -> float:
    """When the k-th of `count` invocations of a minute starting at `start` comes: at (k + 0.5) / count of it."""
    return start + (k + 0.5) * 60 / count


def read_replay(path: Path, fmt: TraceFormat) -> Iterator[Request | TraceMinute]:
    """What fine mode replays: the 2019 trace minute by minute (`TraceMinute`), any other request by request."""
    if fmt is TraceFormat.AZURE_FUNCTIONS_2019:
        yield from _trace_minutes(path)
    else:
        yield from read_requests(path, fmt)


def _trace_minutes(path: Path) -> Iterator[TraceMinute]:
    by_minute: dict[int, list[tuple[str, int]]] = {}
    for series in _functions_minutes(path):
        for minute, count in series.minutes:
            by_minute.setdefault(minute, []).append((series.experiment_id, count))
    for minute in sorted(by_minute):
        yield TraceMinute((minute - 1) * 60, by_minute[minute])


def _spread_minutes(path: Path) -> Iterator[Request]:
    """Minute by minute: the minute's invocations of every function spread over it, in time order."""
    for minute in _trace_minutes(path):
        yield from minute.requests()


def _spread(start: float, experiment_id: str, count: int) -> Iterator[Request]:
    """`count` invocations spread evenly over the minute from `start` (`spread_time`)."""
    for k in range(count):
        yield Request(spread_time(start, k, count), experiment_id)

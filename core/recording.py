"""The traffic recording: a bounded, rotating store of JSON-lines records in one directory.

Why this module exists: advice drawn from an endpoint's own traffic (`hybrid-serve recommend`) needs
that traffic kept, by default, without an operator remembering to turn a log on and without a disk
that fills up. Each writer (a server, Ray's controller, a Modal ingress container — several may share
the directory, on Modal a Volume) appends to segments of its own, named by its start time and a
random token, so writers never interleave or rename each other's files. A segment is closed at a
size (an eighth of the budget) or an age; at each rotation the oldest segments are deleted while the
directory holds more than `max_bytes` or they are older than the retention. A line is one `write` of
an already-open file: recording costs a JSON encoding per record and a system call per `extend`.

What is recorded is the caller's business (core.serving.traffic: never inputs or outputs).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from core.settings import Settings

SUFFIX = ".jsonl"
#: A segment is closed after this many seconds at most (and the retention is kept to about this).
MAX_SEGMENT_AGE_S = 3600.0
MIN_SEGMENT_BYTES = 64 * 1024
#: One encoder for every line (json.dumps with options builds a new one at each call).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def json_line(record: dict[str, Any]) -> str:
    """A record as one compact JSON line, its newline included (anything not JSON as its `str`)."""
    return _encode(record) + "\n"


@dataclass(frozen=True)
class Limits:
    """How much a recording keeps: at most `max_bytes` on disk (about: each writer's open segment comes
    on top), nothing older than `retention_s`."""

    max_bytes: int
    retention_s: float

    @property
    def segment_bytes(self) -> int:
        return max(MIN_SEGMENT_BYTES, self.max_bytes // 8)


class Recording:
    """One writer's view of a recording directory: `append` records, `read` everyone's."""

    def __init__(self, directory: str | Path, limits: Limits, clock: Callable[[], float] = time.time):
        self.directory = Path(directory).expanduser()
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment: Path | None = None
        self._opened_at = 0.0
        self._size = 0

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line of this writer's current segment (opened, rotated as needed)."""
        self.extend((record,))

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        """Write records as lines of this writer's current segment, in one `write`."""
        lines = "".join([json_line(record) for record in records]).encode()
        with self._lock:
            fd = self._writable(len(lines))
            os.write(fd, lines)
            self._size += len(lines)

    def _writable(self, coming: int) -> int:
        fd = self._fd
        if fd is not None:
            fresh = self.clock() - self._opened_at < MAX_SEGMENT_AGE_S
            if fresh and self._size + coming <= self.limits.segment_bytes and os.fstat(fd).st_nlink > 0:
                return fd  # st_nlink 0: another writer pruned this segment; records go to a new one
            self._close()
        return self._open()

    def _open(self) -> int:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # made here: for its owner only
        self.prune()
        now = self.clock()
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S%f")  # sorts by start time
        self._segment = self.directory / f"{stamp}-{secrets.token_hex(4)}{SUFFIX}"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._opened_at, self._size = now, 0
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._segment = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def segments(self) -> list[Path]:
        """Every writer's segments, oldest first (the name starts with the segment's start time)."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except OSError:  # not made yet, or not a folder: nothing recorded there
            return []

    def prune(self) -> list[Path]:
        """Delete the segments past the retention, then the oldest while over the size budget (never
        this writer's open one); returns what was deleted."""
        sizes: list[tuple[Path, int, float]] = []
        for segment in self.segments():
            try:
                stat = segment.stat()
            except FileNotFoundError:
                continue  # another writer pruned it a moment ago
            sizes.append((segment, stat.st_size, stat.st_mtime))
        total, cutoff, gone = sum(s for _, s, _ in sizes), self.clock() - self.limits.retention_s, []
        for segment, size, mtime in sizes:
            if segment == self._segment:
                continue
            if mtime < cutoff or total > self.limits.max_bytes:
                segment.unlink(missing_ok=True)
                total -= size
                gone.append(segment)
        return gone

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every record of every segment (segments oldest first; lines in the order written) with a
        `time` at or after `since`. A line cut short by a killed writer, or not a record, is skipped."""
        for segment in self.segments():
            try:
                if since is not None and segment.stat().st_mtime < since:
                    continue  # nothing was written to it since
                lines = segment.read_bytes().splitlines()
            except OSError:  # pruned a moment ago, or unreadable: the other segments still count
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("time", 0), (int, float)):
                    continue
                if since is None or record.get("time", 0) >= since:
                    yield record


#: One writer per process, folder and limits: the parts of a process that record (a request path, Ray's
#: scaling policy of every experiment) share its segments instead of each holding a file open.
_WRITERS: dict[tuple[int, Path, Limits], Recording] = {}
_WRITERS_LOCK = threading.Lock()


def recording_for(settings: "Settings") -> Recording | None:
    """The recording the settings ask for (HYBRID_TRAFFIC_*), shared within this process; None when
    HYBRID_TRAFFIC_RECORD is off."""
    if not settings.traffic_record:
        return None
    limits = Limits(int(settings.traffic_max_mb * 1024 * 1024), settings.traffic_retention_days * 86400)
    key = (os.getpid(), Path(settings.traffic_dir).expanduser().absolute(), limits)  # a forked child opens its own
    with _WRITERS_LOCK:
        writer = _WRITERS.get(key)
        if writer is None:
            writer = _WRITERS[key] = Recording(settings.traffic_dir, limits)
        return writer

"""The console of `hybrid-serve serve` follows the event log: one line per scaling event or registry change.

Why this module exists: the events happen in other processes — a Ray replica, the autoscaling policy
inside Serve's controller, the ingress — and all of them already append to one event log
(core.events). The process an operator watches follows that file from a thread and prints each new
event (core.event_lines), so every backend's console shows the same lines in the same way. Without
HYBRID_EVENT_LOG the server gets a private log in a temporary folder, removed at exit; a user's own
HYBRID_EVENT_LOG is followed from its end as it was (earlier runs' events are not shown again) and
never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from core.event_lines import event_line
from core.settings import Settings

#: How often the follower looks for new lines (an event shows at most this late).
POLL_S = 0.2
#: A private log is emptied once the console has read this much of it, so a server that runs for
#: weeks (a line per request) keeps a small file; the events written between the last read and the
#: truncation (microseconds) miss the console, never the server.
PRIVATE_LOG_MAX_BYTES = 4 * 1024 * 1024


class EventTail:
    """Calls `on_record` for each complete line appended to `path` after `offset` (None: its end now), in
    a daemon thread; a file truncated or replaced is read again from its start; a line that is not
    JSON is skipped. With `empty_after` (a log this console owns), the file is emptied once that many
    bytes were read."""

    def __init__(self, path: Path, on_record: Callable[[dict[str, Any]], None], offset: int | None = None,
                 poll_s: float = POLL_S, empty_after: int | None = None):
        self.path = path
        self.empty_after = empty_after
        self.on_record = on_record
        self.offset = _size(path) if offset is None else offset
        self.poll_s = poll_s
        self._partial = b""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="event-console", daemon=True)

    def start(self) -> "EventTail":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following, after printing what the file holds by now."""
        self._stopped.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        while not self._stopped.wait(self.poll_s):
            self.read_new()
        self.read_new()

    def read_new(self) -> None:
        size = _size(self.path)
        if size < self.offset:  # truncated or replaced: its lines are new
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except OSError:
            return
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.on_record(record)
        if self.empty_after is not None and self.offset >= self.empty_after and not self._partial:
            try:
                os.truncate(self.path, 0)  # writers append (O_APPEND): their next line starts the file
            except OSError:
                return
            self.offset = 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # not there yet
        return 0


def printer(requests: bool, out: TextIO | None = None) -> Callable[[dict[str, Any]], None]:
    """Prints an event's console line (`requests`: a request's too) on `out` (default: standard output,
    where the server's ready message goes)."""

    def show(record: dict[str, Any]) -> None:
        line = event_line(record, requests)
        if line is not None:
            print(line, file=out or sys.stdout, flush=True)

    return show


@contextmanager
def events_on_console(settings: Settings, requests: bool, private: bool = True,
                      out: TextIO | None = None) -> Iterator[Settings]:
    """Yields the settings to serve with while their event log's new events are printed. Without
    HYBRID_EVENT_LOG, `private` (every process of the server can write to this machine's files): a
    private log in a temporary folder, removed on the way out; not `private`: nothing is followed."""
    folder: Path | None = None
    if settings.event_log is None:
        if not private:
            yield settings
            return
        folder = Path(tempfile.mkdtemp(prefix="hybrid-serve-events-"))
        # Request lines only when they are printed: writing and reading one per request costs the API.
        settings = settings.model_copy(update={"event_log": folder / "events.jsonl", "event_log_requests": requests})
    assert settings.event_log is not None
    tail = EventTail(Path(settings.event_log), printer(requests, out), offset=0 if folder else None,
                     empty_after=PRIVATE_LOG_MAX_BYTES if folder else None).start()
    try:
        yield settings
    finally:
        tail.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

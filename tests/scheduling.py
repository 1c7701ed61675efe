"""How the suite's tests are shared between its two pytest-xdist workers.

Why this module exists: the tests on this test session's Ray instance (modules marked `session_ray`,
and the testing kit's `hybrid_serve` tests) are half of the suite's time, and each worker that runs
one starts a Ray instance and Serve of its own — tens of CPU-seconds on two cores, and a second Ray
instance beside the first for the rest of the run. So one worker takes them all, one after the other
(one Ray start per run); every other test goes with its file, so that a file's module fixtures start
once. pytest-xdist's own `loadgroup` cannot say so here: it renames test ids, which pytest 9 no longer
lets a plugin do; this scheduler groups by file name instead. The xdist controller collects nothing,
so it tells a session-Ray file by its module-level mark in the source; tests/conftest.py checks, on
each worker, that this agrees with the marks pytest itself reads.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from xdist.scheduler import LoadScopeScheduling

#: The one xdist unit of work that holds every session-Ray test.
SESSION_RAY = "session-ray"

_MARKED = re.compile(r"^pytestmark\s*=\s*pytest\.mark\.(session_ray|hybrid_serve)\b", re.MULTILINE)


@lru_cache(maxsize=None)
def marked_session_ray(path: Path) -> bool:
    """Whether the test file at `path` marks its module `session_ray` or `hybrid_serve`."""
    return path.is_file() and _MARKED.search(path.read_text(encoding="utf-8")) is not None


def unit_of(rootpath: Path, nodeid: str) -> str:
    """The unit of work a test belongs to: the session-Ray unit, or its file."""
    file = nodeid.split("::", 1)[0]
    return SESSION_RAY if marked_session_ray(rootpath / file) else file


class SessionRayScheduling(LoadScopeScheduling):
    """pytest-xdist's scheduling by unit of work (a unit runs whole on one worker, units are handed out
    in collection order), with every session-Ray file in one unit and every other file a unit of its own."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(self.config.rootpath, nodeid)

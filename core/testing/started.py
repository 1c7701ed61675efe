"""`Started`: a running endpoint as a backend of the testing kit reports it.

Why this module exists: every local backend (core's in-process one, the Ray backend through its entry
point) returns one, and the kit's backend lookup (`core.testing.backends`) creates the in-process
backend; with `Started` in a module of its own, neither of the two imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Started:
    """A running endpoint as its backend reports it."""

    url: str
    #: The backend's own handle, given back to its `stop`.
    handle: Any
    #: Facts a test may check (the Ray backend: `started_ray`, `node_id`, `gcs_address`).
    details: dict[str, Any] = field(default_factory=dict)

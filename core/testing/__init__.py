"""hybrid-serve's testing kit: your own integration tests against the local emulator in a few lines.

Why this package exists: hybrid-serve runs locally on Ray Serve so that users can test what their
experiments do under Modal's scaledown windows before they deploy. This kit starts the local backend
for a test (`local_endpoint`, or the pytest fixture `hybrid_serve_endpoint` that `pip install
hybrid-serve` registers), hands it a small client, turns the emulator's observations (replicas, cold
starts, the scaling event log) into assertions with clear messages, and runs the windows on an
emulated clock so a 900 s window passes in seconds. Core reaches a backend only through the
`hybrid_serve.test_backends` entry points.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: The kit's public names and their modules: imported on first use (PEP 562), so that the pytest
#: plugin, which every test run of an installing project loads, imports nothing heavy until asked.
_EXPORTS = {
    "EmulatedClock": "core.testing.clock",
    "Endpoint": "core.testing.endpoint",
    "EndpointConfig": "core.testing.config",
    "EndpointError": "core.testing.backends",
    "Served": "core.testing.process",
    "close_backends": "core.testing.backends",
    "free_port": "core.testing.process",
    "local_endpoint": "core.testing.endpoint",
    "served": "core.testing.process",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

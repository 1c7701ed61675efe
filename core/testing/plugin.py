"""The pytest plugin of hybrid-serve: the testing kit as fixtures, with no import.

Why this module exists: `pip install hybrid-serve` registers this module through the `pytest11` entry
point, so a user's test only asks for `hybrid_serve_endpoint`. Configure it with the marker

    @pytest.mark.hybrid_serve(registry={...}, settings={...}, time_scale=450, backend="ray")

(on a test, a class or a module's `pytestmark`; the closest one wins per argument) or by overriding
the `hybrid_serve_config` fixture. The entry point's name is this module's name, so that `-p
core.testing.plugin` (how a source checkout turns it on) and the installed entry point are one plugin
to pytest, never registered twice. Ray, started by the first endpoint, stops when the session ends.
The kit is imported only by a test that uses it: the plugin costs other test runs nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from core.testing.config import EndpointConfig
    from core.testing.endpoint import Endpoint

MARKER = "hybrid_serve"


#: Warnings a test session using the kit would otherwise show and no user can act on: Serve's own
#: Pydantic fields, and the push period the emulator sets through a field Ray deprecates yet still reads
#: (ray/serve/_private/replica.py, router.py) — the windows' fidelity depends on it.
QUIET_WARNINGS = (
    "ignore::pydantic.warnings.PydanticDeprecatedSince20:ray\\.",
    "ignore:The `metrics_interval_s` field in AutoscalingConfig is deprecated:DeprecationWarning",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(registry=None, settings=None, time_scale=1.0, backend='ray', name=None, "
                   "startup_timeout_s=300): how the hybrid_serve_endpoint fixture starts the local backend")
    for line in QUIET_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


def pytest_unconfigure(config: pytest.Config) -> None:
    backends = sys.modules.get("core.testing.backends")
    if backends is not None:  # an endpoint was opened in this session: release what it kept up
        backends.close_backends()


@pytest.fixture
def hybrid_serve_config(request: pytest.FixtureRequest) -> EndpointConfig:
    """The endpoint's configuration from the `hybrid_serve` markers (override this fixture to compute it)."""
    from core.testing.config import EndpointConfig

    arguments: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):  # the farthest first: the closest wins
        if marker.args:
            arguments["registry"] = marker.args[0]
        arguments.update(marker.kwargs)
    try:
        return EndpointConfig(**arguments)
    except TypeError as exc:
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: {exc}") from None


@pytest.fixture
def hybrid_serve_endpoint(hybrid_serve_config: EndpointConfig) -> Iterator[Endpoint]:
    """A running local endpoint for this test; everything it deployed is removed after the test."""
    from core.testing.endpoint import open_endpoint

    with open_endpoint(hybrid_serve_config) as endpoint:
        yield endpoint

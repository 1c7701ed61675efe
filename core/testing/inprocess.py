"""The in-process backend of the testing kit: `hybrid-serve serve --backend inprocess` in its own process.

Why this module exists: some tests only need the API and the models, not the emulated containers;
one process that loads the models starts faster than Ray. It runs the real main job (its own
interpreter, its settings from the environment), so the test process never loads a model itself.
"""

from __future__ import annotations

from contextlib import ExitStack

from core.settings import Settings
from core.testing.started import Started
from core.testing.config import settings_environment
from core.testing.process import served


class InProcessBackend:
    emulates_windows = False
    one_at_a_time = False

    def start(self, settings: Settings, host: str, port: int, name: str, timeout_s: float) -> Started:
        stack = ExitStack()
        server = stack.enter_context(served("inprocess", settings_environment(settings), timeout_s, port))
        return Started(server.url, stack, {"pid": server.pid})

    def stop(self, started: Started) -> None:
        started.handle.close()

    def close(self) -> None:
        """Nothing outlives an endpoint here."""

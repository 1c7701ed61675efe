"""The local backends an endpoint of the testing kit runs on, found by name, held for the session.

Why this module exists: core never imports a backend. The Ray backend plugs into the kit through the
`hybrid_serve.test_backends` entry point group (as `hybrid-serve serve` finds its backends through
`hybrid_serve.backends`); the in-process backend is core's own. A backend is created once and kept
until `close_backends` (the pytest plugin calls it when the session ends), so a second endpoint in
one test session reuses what the first one started — for Ray, the Ray instance and Serve.
"""

from __future__ import annotations

import atexit
import threading
import tomllib
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Protocol

from core.settings import Settings
from core.testing.started import Started

__all__ = ["EndpointError", "LocalBackend", "Started", "available", "backend", "close_backends"]

GROUP = "hybrid_serve.test_backends"
INPROCESS = "inprocess"


class EndpointError(RuntimeError):
    """An endpoint could not be started as asked; the message says why and what to do."""


class LocalBackend(Protocol):
    """What the kit needs of a backend: start one endpoint, stop it, and release everything at the end."""

    #: Whether this backend emulates scaledown windows (replicas that come and go).
    emulates_windows: bool
    #: Whether one endpoint at a time may be open in a process (Ray: Serve routes "/" to one application).
    one_at_a_time: bool

    def start(self, settings: Settings, host: str, port: int, name: str, timeout_s: float) -> Started: ...

    def stop(self, started: Started) -> None: ...

    def close(self) -> None: ...


_held: dict[str, LocalBackend] = {}
_lock = threading.Lock()


def backend(name: str) -> LocalBackend:
    """The session's backend of that name, created on first use."""
    with _lock:
        if name not in _held:
            if not _held:
                atexit.register(close_backends)  # outside pytest too: nothing outlives the interpreter
            _held[name] = _create(name)
        return _held[name]


def close_backends() -> None:
    """Release every backend of this session (the Ray backend stops the Ray instance it started)."""
    with _lock:
        held = list(_held.values())
        _held.clear()
    for each in held:
        each.close()


def _create(name: str) -> LocalBackend:
    if name == INPROCESS:
        from core.testing.inprocess import InProcessBackend

        return InProcessBackend()
    targets = available()
    if name not in targets:
        raise EndpointError(f"unknown backend {name!r}; available: {', '.join(sorted({INPROCESS, *targets}))}")
    return _load(targets[name])()


def available() -> dict[str, str]:
    """The backends of the entry point group: name → `module:attribute`. A source checkout whose
    installed metadata predates the group (an editable install not reinstalled since) reads the group
    from the checkout's own pyproject.toml instead."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    return found or _declared_in_checkout()


def _declared_in_checkout() -> dict[str, str]:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():  # an installed wheel: its metadata is all there is
        return {}
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    if project.get("name") != "hybrid-serve":
        return {}
    return dict(project.get("entry-points", {}).get(GROUP, {}))


def _load(target: str) -> Callable[[], LocalBackend]:
    module_name, _, attr = target.partition(":")
    return getattr(import_module(module_name), attr)

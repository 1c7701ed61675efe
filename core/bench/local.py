"""The local target of `hybrid-serve bench`: the real `hybrid-serve serve` (Ray emulating Modal's
containers by default, or in-process) started with the user's registry and settings.

Why this module exists: a cold start is measured on a server whose experiment is cold — a fresh one
is — so the bench starts the emulator itself, as `serve` would run it (the same environment, `.env`
and registry), and checks the experiment is registered before paying for a start.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from core.bench.plan import BenchError, Plan
from core.serving.registry import Registry, RegistryError
from core.testing.process import served

#: Seconds the server may take to accept requests (Ray and Serve start first).
START_TIMEOUT_S = {"inprocess": 120.0}
DEFAULT_START_TIMEOUT_S = 300.0


def check_registered(plan: Plan, registry_path: Path | None) -> str:
    """The experiment's task from the registry the server will read; an unknown id or a bad file exits 2."""
    try:
        registry = Registry.load(registry_path)
    except RegistryError as exc:
        raise BenchError(str(exc), 2) from None
    experiment = registry.get(plan.experiment)
    if experiment is None:
        known = ", ".join(e.id for e in list(registry)[:10]) or "none"
        raise BenchError(f"unknown experiment {plan.experiment!r} in {registry_path or 'the shipped demo registry'} "
                         f"(registered: {known})", 2)
    return experiment.task.value


def server_env() -> dict[str, str]:
    """The settings of this process's environment for the server (`.env` it reads itself); the bench's
    own credentials for a remote endpoint stay here."""
    return {k: v for k, v in os.environ.items() if k.startswith(("HYBRID_", "MODAL_")) and not k.startswith("MODAL_PROXY_")}


@contextmanager
def local_server(plan: Plan, say: Callable[[str], None]) -> Iterator[str]:
    """`hybrid-serve serve --backend BACKEND` on a free port, its URL while the block runs; stopped after."""
    say(f"starting hybrid-serve serve --backend {plan.backend} (the local emulator)")
    started = time.monotonic()
    stack = ExitStack()
    try:
        server = stack.enter_context(served(plan.backend, server_env(), START_TIMEOUT_S.get(plan.backend, DEFAULT_START_TIMEOUT_S),
                                            hub_offline=False))
    except RuntimeError as exc:
        tail = "\n".join(str(exc).splitlines()[-20:])
        raise BenchError(f"the local server (--backend {plan.backend}) did not come up:\n{tail}") from None
    with stack:
        say(f"server up at {server.url} after {time.monotonic() - started:.1f} s")
        yield server.url

"""Who hears of a registry's changes: the predictor drops or redeploys what a change concerns.

Why this module exists: a change is announced to every listener in turn, and one listener's failure
(a redeploy that raised) must neither stop the others nor the registry: it is logged, and the next
listener hears of the change all the same.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from core.serving.registry import Registry
from core.serving.registry_change import RegistryChange

log = logging.getLogger("hybrid_serve.registry")

Listener = Callable[[RegistryChange, Registry], Awaitable[None]]


class RegistryListeners:
    """The listeners of one live registry, told of each change in the order they subscribed."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def announce(self, change: RegistryChange, registry: Registry) -> None:
        log.info("registry changed: %s", change.describe())
        for listener in self._listeners:
            try:
                await listener(change, registry)
            except Exception:  # one listener's failure must not stop the others
                log.exception("a registry listener failed")

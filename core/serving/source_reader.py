"""Reading a registry's source: only when its stamp moved, and never to the loss of what is served.

Why this module exists: a registry file edited by hand may be half-written or invalid, shared
storage may be unreachable for a while; neither may empty or break the registry a server serves.
A `SourceReader` reads its source only when the cheap stamp moved (or when forced), and turns a
failed read into a recorded error — the last good registry stays, and the next poll retries.
"""

from __future__ import annotations

import logging
from typing import Hashable

from core.serving.registry import Registry, RegistryError
from core.serving.registry_sources import RegistrySource

log = logging.getLogger("hybrid_serve.registry")


class SourceReader:
    """The reads of one source: `stamp` of the last good read, `last_error` of the last failed one."""

    def __init__(self, source: RegistrySource, stamp: Hashable = None):
        self.source = source
        self.stamp = stamp
        #: Why the last read failed (None: it succeeded).
        self.last_error: str | None = None

    async def read_if_moved(self, force: bool = False) -> Registry | None:
        """The source's registry when its stamp moved since the last good read (or `force`); None when
        it did not move, or when reading it failed (`last_error` says why)."""
        try:
            if not force and await self.source.stamp() == self.stamp:
                return None
            stamp, registry = await self.source.read()
        except RegistryError as exc:  # a bad edit: keep serving the last good registry
            if self.last_error != str(exc):
                log.warning("registry not reloaded, still serving the last good one: %s", exc)
            self.last_error = str(exc)
            return None
        except Exception as exc:  # unreachable storage, ...: the same, and retried next poll
            self.last_error = f"reading the registry failed: {type(exc).__name__}: {exc}"
            return None
        self.last_error = None
        self.stamp = stamp
        return registry

"""The shared state's lasting entries, read once a day so that modal never expires them.

Why this module exists: modal 1.6 drops a `modal.Dict` entry after 7 days without a read or write of
it. Most keys are read all the time, but some only when something changes — `registry/<id>` when the
stamp moves or a container starts, `registry-seeded` at a container's start, an idle experiment's
`activity/<id>` — so a quiet week would silently empty the registry (every request 404) and forget
what the policy learned. The reconciler, which runs on a schedule whatever the traffic, reads each
lasting entry once every `EVERY_S`, after its windows are applied and a few reads at a time;
`kept-alive-at` says when it last did (and, read on every pass, never expires itself). An entry that
cannot be read is logged and left for the next day's turn: it never fails a pass.
"""

from __future__ import annotations

import asyncio
import logging

from backends.modal_backend.state_store import (ACTIVITY, APPLIED, CURSORS, KEPT_ALIVE_AT, REGISTRY, REGISTRY_SEEDED,
                                                REGISTRY_STAMP, StateStore)
from backends.modal_backend.usage_folding import TOTAL

log = logging.getLogger("hybrid_serve.modal.keep_alive")

#: How often every lasting entry is read (well inside modal's 7 days, with room for failed passes).
EVERY_S = 86400.0
#: Reads at once (a registry of thousands is read in a few seconds, never all its keys at once).
CONCURRENT_READS = 16
#: The keys that must outlast any quiet spell (by prefix or whole name).
LASTING_PREFIXES = (REGISTRY, ACTIVITY, TOTAL)
LASTING_KEYS = (REGISTRY_STAMP, REGISTRY_SEEDED, APPLIED, CURSORS)


def lasting(key: object) -> bool:
    return isinstance(key, str) and (key.startswith(LASTING_PREFIXES) or key in LASTING_KEYS)


async def keep_alive(store: StateStore, keys: list[str], now: float) -> int:
    """Read every lasting entry when the last reading is `EVERY_S` old; returns how many were read."""
    last = await store.get(KEPT_ALIVE_AT)
    if isinstance(last, (int, float)) and now - last < EVERY_S:
        return 0
    chosen = [key for key in keys if lasting(key)]
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def read(key: str) -> bool:
        async with gate:
            try:
                await store.get(key)  # a read is what modal counts: the value itself is not needed
                return True
            except Exception as exc:  # this entry waits for the next day's turn; the others are read
                log.warning("keeping %s alive: could not read it: %s: %s", key, type(exc).__name__, exc)
                return False

    read_now = sum(await asyncio.gather(*(read(key) for key in chosen)))
    await store.put(KEPT_ALIVE_AT, now)
    log.info("kept %d of %d lasting entries of the shared state alive", read_now, len(chosen))
    return read_now

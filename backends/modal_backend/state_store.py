"""The deployment's shared state on Modal: one `modal.Dict`, its keys, and who writes each.

Why this module exists: ingress containers come and go, and `modal.Dict` has no compare-and-set, so
every key has exactly one writer and nothing is ever read-modified-written by two processes:

| key | written by | holds |
| --- | --- | --- |
| `arrivals/<container>` | that ingress container only | its recent `ArrivalBatch`es, numbered |
| `activity/<experiment>` | the reconciler only | the experiment's `DurableActivity` (idle-gap histogram included) |
| `cursors` | the reconciler only | per ingress container, the last batch number folded |
| `applied` | the reconciler only | per experiment, the `AppliedWindow` in force, its deployment and the pool it was applied to (`pool`: the pool's definition, see pools.py); a pool no longer current is drained once and its entry dropped |
| `registry/<experiment>` | `experiments add/update/remove --modal`, the admin API, `hybrid-serve deploy` (seeding) | the experiment's registry entry: a plain dict of its fields (`source`, `task`, ...) |
| `registry-stamp` | every writer of a `registry/` key, right after it | a fresh unique value: readers poll it (one call) and re-read the entries only when it moved |
| `registry-seeded` | whoever seeds the registry from a deploy's registry file first (`hybrid-serve deploy`, or the deployment's first container) | the deployment id last seeded: later containers of it never seed again (registry_sync.py) |
| `kept-alive-at` | the reconciler only | when it last read every lasting entry, so that modal's 7-day expiry of untouched entries never drops one (keep_alive.py) |
| `live/<container>` | that model container only (the reconciler removes it once it stopped beating: a container gone without its exit hook) | its experiment, its pool and when it last beat: the containers running now, for the deployment's cap (live_containers.py) |
| `starting/<ingress container>` | that ingress container only (the reconciler removes it once nothing in it is recent) | the cold starts it let through, by pool, with when: counted as containers until their pools beat (live_containers.py) |
| `grants` | the reconciler only | its last pass's time and the slots it granted each pool (`max_containers` without Modal's floor of 1): the ingresses count them as held (live_containers.py) |
| `usage/<experiment>/<container>` | that model container only | its life in the cost ledger: a `UsageRecord` as JSON (container_lives.py) |
| `usage-total/<experiment>` | the reconciler only | its stopped containers' records folded into one, and the container keys its last passes folded (usage_folding.py) |

The registry is the one exception to "one writer per key": operators change experiments from several
places. Each experiment has its own key, so concurrent changes of *different* experiments never lose
each other; two changes of the *same* experiment at once: the last write wins. A writer writes the
entry, then the stamp; a reader reads the stamp, then the entries — so a reader that saw a stamp has
seen every entry written before it (a later entry at worst moves the stamp again: read next poll).

Values are plain dicts of numbers, strings and bytes. `StateStore` is the network boundary: in
Modal it is the Dict's async methods (`ModalDictStore`); tests put a strict in-memory stand-in there.
"""

from __future__ import annotations

from typing import Any, Protocol

ARRIVALS = "arrivals/"
ACTIVITY = "activity/"
CURSORS = "cursors"
APPLIED = "applied"
REGISTRY = "registry/"
REGISTRY_STAMP = "registry-stamp"
REGISTRY_SEEDED = "registry-seeded"
KEPT_ALIVE_AT = "kept-alive-at"
LIVE = "live/"
STARTING = "starting/"
GRANTS = "grants"


def arrivals_key(container: str) -> str:
    return ARRIVALS + container


def activity_key(experiment_id: str) -> str:
    return ACTIVITY + experiment_id


def registry_key(experiment_id: str) -> str:
    return REGISTRY + experiment_id


def live_key(container: str) -> str:
    return LIVE + container


def starting_key(ingress_container: str) -> str:
    return STARTING + ingress_container


class StateStore(Protocol):
    async def get(self, key: str) -> Any:
        """The value, or None when the key is absent."""

    async def put(self, key: str, value: Any) -> None: ...

    async def pop(self, key: str) -> Any:
        """Remove the key; its value, or None when it was absent."""

    async def keys(self) -> list[str]: ...


class ModalDictStore:
    """`StateStore` over a `modal.Dict` (its `.aio` methods: the network calls)."""

    def __init__(self, modal_dict: Any):
        self._dict = modal_dict

    async def get(self, key: str) -> Any:
        return await self._dict.get.aio(key)

    async def put(self, key: str, value: Any) -> None:
        await self._dict.put.aio(key, value)

    async def pop(self, key: str) -> Any:
        return await self._dict.pop.aio(key, None)

    async def keys(self) -> list[str]:
        return [key async for key in self._dict.keys.aio()]

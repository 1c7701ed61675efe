"""How many containers each experiment's pool may run, so that the deployment as a whole stays within
`MODAL_MAX_CONTAINERS`.

Why this module exists: the cap is the deployment's, but every platform caps one pool at a time —
Modal's `max_containers` per pool (where 0 means no limit), Serve's `max_replicas` per deployment. So
a pool may grow only into the slots the others leave free, within one experiment's own cap
(`HYBRID_MAX_CONTAINERS_PER_EXPERIMENT`), and a request that would start the first container of a pool
is admitted only while a slot is free. These are plain functions of the containers running now; each
backend counts its containers and applies the answers (Ray's scaling policy, Modal's reconciler and
ingress).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from core.settings import Settings


@dataclass(frozen=True)
class ContainerBudget:
    """The deployment's cap and one experiment's within it (`per_pool` ≤ `total`)."""

    total: int
    per_pool: int

    @classmethod
    def of(cls, settings: Settings) -> "ContainerBudget":
        return cls(settings.max_containers, settings.experiment_max_containers)

    def free(self, running: Mapping[str, int]) -> int:
        """Slots no pool holds now."""
        return max(0, self.total - sum(running.values()))

    def pool_limit(self, pool: str, running: Mapping[str, int]) -> int:
        """The most containers `pool` may run now: its own and every slot the other pools leave free,
        within one experiment's cap. Pools that ask one after another (Ray's policies, in its one
        controller) never hold more than `total` together."""
        others = sum(n for p, n in running.items() if p != pool)
        return max(0, min(self.per_pool, self.total - others))

    def admits(self, pool: str, running: Mapping[str, int]) -> bool:
        """Whether a request to `pool` may go on: always to a pool that runs a container; to one that
        runs none (its request would start one) only while a slot is free."""
        return running.get(pool, 0) > 0 or sum(running.values()) < self.total

    def grants(self, running: Mapping[str, int], pools: Sequence[str], growing: Sequence[str]) -> dict[str, int]:
        """The slots each pool may hold until the next time every pool's share is set (Modal's reconciler):
        its running containers, and for a `growing` pool (one with recent requests) room to double them
        (at least one more), within one experiment's cap — the free slots dealt out one by one in the
        `growing` order. The rest stays free for cold starts of other experiments: a pool never hoards
        slots it may not need. Together the grants stay within `total`."""
        growing = [p for p in dict.fromkeys(growing) if p in pools]
        wants = {p: min(self.per_pool, running.get(p, 0) + max(1, running.get(p, 0))) for p in growing}
        extra = dict.fromkeys(growing, 0)
        left = self.free(running)
        while left:
            open_pools = [p for p in growing if running.get(p, 0) + extra[p] < wants[p]]
            if not open_pools:
                break
            for pool in open_pools[:left]:
                extra[pool] += 1
            left -= min(left, len(open_pools))
        return {pool: min(self.per_pool, running.get(pool, 0) + extra.get(pool, 0)) for pool in pools}

    @staticmethod
    def modal_limit(granted: int) -> int:
        """A pool's `max_containers` on Modal: its grant, at least 1 — Modal reads 0 as no limit, so a pool
        granted nothing is held at zero by `admits` (the ingress) instead."""
        return max(1, granted)

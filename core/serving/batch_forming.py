"""What forms a batch: everything already queued, more for at most `max_wait_s`, grouped by parameters.

Why this module exists: the batch's size and wait are the trade between throughput and latency —
wait too long and a lone request pays for nothing, take too much and one pass delays everyone. A
`BatchForming` takes the callers waiting in a queue into one batch (up to `max_batch_size` inputs,
waiting at most `max_wait_s` for more) and splits it into groups that can share one forward pass:
equal parameters, at most `max_batch_size` inputs each (a bigger request runs alone).
"""

from __future__ import annotations

import asyncio
import time
from typing import Hashable

from core.serving.forward_pass import Pending


class BatchForming:
    """Takes queued callers into batches of at most `max_batch_size` inputs, waiting at most `max_wait_s`."""

    def __init__(self, max_batch_size: int = 32, max_wait_s: float = 0.0):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s

    async def take(self, first: Pending, queue: asyncio.Queue[Pending]) -> list[list[Pending]]:
        """`first` and what the queue holds or receives within `max_wait_s`, as groups for one pass each."""
        batch = [first]
        size = len(first.inputs)
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch_size:
            if queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = queue.get_nowait()
            batch.append(item)
            size += len(item.inputs)
        return self.groups(batch)

    def groups(self, batch: list[Pending]) -> list[list[Pending]]:
        """Split by parameters, then into chunks of at most max_batch_size inputs (a big request runs alone)."""
        by_key: dict[Hashable, list[Pending]] = {}
        for item in batch:
            by_key.setdefault(item.key, []).append(item)
        groups: list[list[Pending]] = []
        for items in by_key.values():
            current: list[Pending] = []
            count = 0
            for item in items:
                if current and count + len(item.inputs) > self.max_batch_size:
                    groups.append(current)
                    current, count = [], 0
                current.append(item)
                count += len(item.inputs)
            groups.append(current)
        return groups

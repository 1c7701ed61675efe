"""The deployment's replica slots on Ray: the ingress admits a request that would start an experiment's
first replica only while a slot is free, and the pools' scaling policies grow only into free slots.

Why this module exists: `MODAL_MAX_CONTAINERS` caps the whole deployment, but Serve caps one deployment
at a time, and it starts a pool's first replica for a waiting request itself, past any scaling policy.
So:

- the ingress (`ReplicaSlots`) admits a cold experiment's request only while the replicas running or
  starting, and the cold starts it let through — counted from the moment they are admitted until the
  request ends — leave a slot (core.keepwarm.container_budget). The check and the count happen at once
  (no await between them), so 64 requests for 64 cold experiments start exactly the free slots. It
  publishes its cold starts in the GCS (`StartingBoard`), for the policies;
- each pool's scaling policy (scaling.py), in Serve's controller, where every pool's policy runs one
  after another in one process, grows only into the slots left by the others' last decisions (`hold`,
  `held`: a table here, not in scaling.py — Serve pickles a policy's module by value, so each pool's
  policy has its own copy of that module's globals) and by the cold starts under way (`starting`). A
  pool whose policy stopped running (deleted) leaves the table after `HELD_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from backends.local_ray.replica_watch import ReplicaStates, live
from core.keepwarm.container_budget import ContainerBudget
from core.serving.errors import Overloaded

log = logging.getLogger("hybrid_serve.ray.replica_slots")

#: A cold experiment refused because every slot is held: come back after this long (seconds).
RETRY_AFTER_FULL_S = 10.0
#: A pool's entry in the policies' table counts this long after its policy last ran (seconds).
HELD_S = 10.0
#: The policies read the ingress's cold starts from the GCS at most this often (seconds).
BOARD_READ_S = 0.5
NAMESPACE = "hybrid-serve-slots"


class StartingBoard:
    """The ingress's cold starts under way — experiment → when admitted — in the GCS, under the
    application's name (blocking calls: run them off the event loop)."""

    def __init__(self, app_name: str):
        self.key = app_name.encode()

    def write(self, starting: dict[str, float]) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(self.key, json.dumps(starting).encode(), overwrite=True, namespace=NAMESPACE)

    def forget(self) -> None:
        """No cold start under way (an application that starts, or stops: none left by a killed one)."""
        from ray.experimental import internal_kv

        if internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_del(self.key, namespace=NAMESPACE)

    def read(self) -> dict[str, float]:
        from ray.experimental import internal_kv

        if not internal_kv._internal_kv_initialized():
            return {}
        value = internal_kv._internal_kv_get(self.key, namespace=NAMESPACE)
        return {} if value is None else dict(json.loads(value))


class ReplicaSlots:
    """The ingress's admission of cold starts within the deployment's replica slots."""

    def __init__(self, cap: int, board: StartingBoard | None = None, clock: Callable[[], float] = time.time):
        #: Replicas across experiments (MODAL_MAX_CONTAINERS, within what the cluster holds); 0: no cap.
        self.cap = cap
        self._board = board
        self._clock = clock
        self._cold: dict[str, list[float]] = {}  # experiment → when each of its requests admitted cold came
        self._writing: asyncio.Task[None] | None = None
        self._unwritten = False

    def running(self, states: ReplicaStates) -> dict[str, int]:
        """Replicas by experiment: running or starting, and at least one for a cold start let through."""
        running = {e: live(s) for e, s in states.items()}
        for experiment_id in self._cold:
            running[experiment_id] = max(running.get(experiment_id, 0), 1)
        return running

    @contextmanager
    def taken(self, experiment_id: str, states: ReplicaStates) -> Iterator[None]:
        """For one request: refused (`Overloaded`, at once rather than queued behind windows that may last
        minutes) when it would start a replica while other experiments' replicas hold every slot."""
        running = self.running(states)
        if self.cap and not ContainerBudget(self.cap, self.cap).admits(experiment_id, running):
            raise Overloaded(f"{experiment_id}: all {self.cap} replica slots of the deployment (MODAL_MAX_CONTAINERS, "
                             f"within HYBRID_MAX_REPLICAS or what the cluster holds) hold other experiments' replicas "
                             f"inside their windows; retry in {RETRY_AFTER_FULL_S:g}s", retry_after_s=RETRY_AFTER_FULL_S)
        cold = not live(states.get(experiment_id, {}))
        try:
            if cold:
                self._cold.setdefault(experiment_id, []).append(self._clock())
                self._publish()
            yield
        finally:
            if cold:
                self._cold[experiment_id].pop(0)
                if not self._cold[experiment_id]:
                    del self._cold[experiment_id]
                self._publish()

    def _publish(self) -> None:
        """The cold starts under way, written to the board in the background (the latest list last)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): nothing to publish to the policies
            return
        if self._board is None:
            return
        self._unwritten = True
        if self._writing is None or self._writing.done():
            self._writing = loop.create_task(self._write())

    async def _write(self) -> None:
        assert self._board is not None
        while self._unwritten:
            self._unwritten = False
            starting = {e: min(times) for e, times in self._cold.items()}
            try:
                await asyncio.to_thread(self._board.write, starting)
            except Exception as exc:  # the next change writes the list again
                log.warning("publishing the cold starts under way failed: %s: %s", type(exc).__name__, exc)


# --- in Serve's controller: the scaling policies' shared view of the slots -------------------------

_HELD: dict[str, dict[str, tuple[int, float]]] = {}
_BOARDS: dict[str, tuple[float, dict[str, float]]] = {}  # app → (when read, its cold starts)


def hold(app_name: str, experiment_id: str, replicas: int, now: float) -> None:
    """A pool's policy decided (or found running) `replicas` at `now`."""
    _HELD.setdefault(app_name, {})[experiment_id] = (replicas, now)


def held(app_name: str, now: float, starting_s: float) -> dict[str, int]:
    """Replicas by pool as the policies last decided them (entries of pools whose policy stopped running
    left out), and at least one for each cold start the ingress let through less than `starting_s` ago."""
    counts = {e: n for e, (n, at) in _HELD.get(app_name, {}).items() if now - at < HELD_S}
    read_at, starting = _BOARDS.get(app_name, (float("-inf"), {}))
    if now - read_at >= BOARD_READ_S or now < read_at:
        try:
            starting = StartingBoard(app_name).read()
        except Exception:  # the GCS unreachable a moment: the last reading holds
            log.exception("could not read the cold starts under way")
        _BOARDS[app_name] = (now, starting)
    for experiment_id, since in starting.items():
        if now - since < starting_s:
            counts[experiment_id] = max(counts.get(experiment_id, 0), 1)
    return counts

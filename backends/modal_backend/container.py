"""What runs inside one experiment's Modal model container, as plain Python.

Why this module exists: the Modal class in `inference_api.py` only adds decorators; the work —
take the experiment's definition from the pool's parameters (pools.py), load its model (to the CPU before a memory
snapshot, which has no GPU; to the GPU after restore), keep newly downloaded weights on the volume
without ever failing the container for it, and serve predictions that report the cold start —
lives here, so tests run it exactly as the container does. It also keeps the container's own life in
the cost ledger and publishes it to the shared state (container_lives.py), and beats while it runs, so
the deployment's container cap counts it (live_containers.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from backends.modal_backend.container_lives import ContainerLife, container_id, process_started_at
from backends.modal_backend.deploy_config import REMOTE_ROOT
from backends.modal_backend.live_containers import Heartbeat
from backends.modal_backend.pools import PoolKey
from backends.modal_backend.settings import ModalSettings
from backends.modal_backend.state_store import StateStore
from backends.modal_backend.stream_calls import call_named
from core.serving.worker import RemoteWorker

log = logging.getLogger("hybrid_serve.modal.container")


def cache_contents(root: str | None) -> frozenset[tuple[str, int]]:
    """(path, size) of every file under a cache on the volume (Hugging Face's, MLflow models'): what a
    load may have added."""
    if not root or not Path(root).is_dir():
        return frozenset()
    found = set()
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            try:
                found.add((str(path), path.stat().st_size))
            except OSError:  # a file removed while walking
                continue
    return frozenset(found)


class ModelContainer:
    def __init__(self, settings: ModalSettings, pool: PoolKey, commit_weights: Callable[[], Any],
                 store: StateStore | None = None):
        self._store = store  # the shared state, where this container publishes its life (None: nowhere)
        self.life: ContainerLife | None = None
        self.heartbeat: Heartbeat | None = None  # this container in the deployment's running containers
        self._container_id: str | None = None  # its key in the shared state: taken at its start (after a restore)
        self._publishing: asyncio.Task[None] | None = None
        # Model directories shipped with the deploy lie beside the container's registry file.
        base_dir = settings.registry_path.parent if settings.registry_path else Path(REMOTE_ROOT)
        self.pool = pool
        self.worker = RemoteWorker(settings, pool.experiment(base_dir))
        self._weight_roots = [os.environ.get("HF_HOME"), str(settings.mlflow_cache) if settings.mlflow_cache else None]
        self._commit_weights = commit_weights

    def load(self, on_cpu: bool) -> None:
        """The cold start: load the model (on the CPU for a CPU memory snapshot), then keep what was
        downloaded on the weights volume for every later cold start."""
        before = [cache_contents(root) for root in self._weight_roots]
        self.worker.load("cpu" if on_cpu else None)
        if [cache_contents(root) for root in self._weight_roots] != before:
            try:
                self._commit_weights()
            except Exception as exc:  # another container committed first, ...: the next cold start retries
                log.warning("committing downloaded weights failed: %s: %s", type(exc).__name__, exc)

    def restored(self) -> None:
        """After a memory snapshot's restore: the weights move to this container's GPU."""
        self.worker.restored()

    def serving(self, restored: bool) -> None:
        """Its model is ready: the cost ledger counts this container from its process's start (a restore:
        from now — the snapshot's own start was paid when it was taken)."""
        if self._store is not None:  # (a restore starts where `restored` began: the worker's start)
            started = self.worker.started_at if restored else (process_started_at() or self.worker.started_at)
            self.life = ContainerLife(self.pool.experiment_id, self._store, started, container=self.container_id)
            self.life.ready()
        self.beat()

    @property
    def container_id(self) -> str:
        """Modal's id of this container, read first at its start (never in a snapshot's phase, whose id
        every restored container would share)."""
        if self._container_id is None:
            self._container_id = container_id()
        return self._container_id

    def beat(self) -> None:
        """From now until it stops, this container counts in the deployment's running containers
        (live_containers.py): called as its start's first step — with a memory snapshot, once it is
        restored and its model is ready, never before the snapshot (a thread would be frozen into it)."""
        if self._store is not None and self.heartbeat is None:
            self.heartbeat = Heartbeat(self._store, self.container_id, self.pool)
            self.heartbeat.start()

    async def close(self) -> None:
        """The container stops (`@modal.exit`): the worker's engine refuses what still waits, stops its
        batchers and releases the model; then its life's record is published a last time (after any
        publication still on its way, so the last one written is the final record)."""
        try:
            await self.worker.close()
        finally:
            if self.heartbeat is not None:  # it stops counting in the deployment's containers whatever happened
                await self.heartbeat.stop()
        if self._publishing is not None and not self._publishing.done():
            await asyncio.gather(self._publishing, return_exceptions=True)
        if self.life is not None:
            await self.life.stopped()

    async def predict(self, inputs: list[str], params: Any, request_at: float | None) -> dict[str, Any]:
        with self._serving():
            return await self.worker.predict(inputs, params, request_at)

    async def stream(self, prompt: str, params: Any, request_at: float | None,
                     call_id: str | None = None) -> AsyncIterator[Any]:
        """A streamed generation (`RemoteWorker.stream`): the container is busy until its last item. It
        begins by naming the input's function call (`call_id`), before the generation waits for the
        model, so that the ingress can cancel it should its client leave at any point (stream_calls.py)."""
        with self._serving():
            if call_id is not None:
                yield call_named(call_id)
            async with aclosing(self.worker.stream(prompt, params, request_at)) as items:
                async for item in items:
                    yield item

    @contextmanager
    def _serving(self) -> Iterator[None]:
        """A request runs: busy time in the container's life, published after it (off the answer's path)."""
        life = self.life
        if life is None:
            yield
            return
        try:
            with life.serving():
                yield
        finally:  # also for a stream its client left
            if self._publishing is None or self._publishing.done():
                self._publishing = asyncio.get_running_loop().create_task(life.publish_due())

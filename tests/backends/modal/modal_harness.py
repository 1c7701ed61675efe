"""Runs the Modal app's container code as Modal would, offline — a script, started by the tests.

The tests lay out the container's file system from the Modal client's own description of the
images' uploads (backends.modal_backend.layout), set the image's environment, and start this script
with only that layout (and this folder) on the Python path, sockets refusing anything but loopback.
It imports `inference_api.py` from the layout and replaces only Modal's network calls:

- the `modal.Dict` of shared state → `StrictDict` (values pickled on the way in and out, as Modal does);
- the weights `modal.Volume` → counts `commit()` calls;
- the model pools (`ExperimentModel(experiment_id=..., definition=...)`, `.with_options(gpu=...)`) →
  `Pools`, one "container" per (parameters, gpu) as Modal keeps one pool per parameter set:
  `.predict.remote.aio` runs the *real* class in a "container" of this process — Modal's own helpers create the instance
  and run its `@modal.enter` hooks (pre- then post-snapshot; with `HYBRID_MEMORY_SNAPSHOT` the
  pre-snapshot phase sees no GPU and the restored one does) — and results cross cloudpickle;
  `.stream.remote_gen.aio` runs the real generator method as an input of its own, which — as in Modal
  1.6 — runs on when its reader closes the generator; only `modal.FunctionCall.from_id(id).cancel`
  (→ `FunctionCall` here) cancels it, the id being the one `modal.current_function_call_id()` gives
  the method; `.update_autoscaler.aio` is recorded;
- `reconcile_windows.spawn.aio` → runs the real reconciler function's body in this process.

Nothing seeds the shared registry before the container starts, as after a plain `modal deploy`: the
container's own code seeds it from the image's registry file (registry_sync.py). With
`HARNESS_SEEDED=<deployment>` the Dict starts marked as seeded by that deployment (an earlier deploy's
registry, changed live since), empty otherwise. `HARNESS_START_DELAY_S` makes each container's start
that slow; `HARNESS_WEB_WAIT_S` scales down Modal's web limit (what the ingress waits before its 503).
A container, once started for a call, starts whatever happens to that call, as on Modal.

Then it serves the real ingress (`web()`'s ASGI app) with uvicorn on a free port and prints one
JSON line `{"port": …, "torch_loaded": …}`; on stdin, `reconcile` runs one reconciler pass and
`report` prints what the stand-ins saw, each as one JSON line. Registry commands change the shared
registry as `hybrid-serve experiments … --modal` does (the same `DictRegistrySource`):
`registry-put {"id": …, fields}`, `registry-remove ID`; `dict-put KEY JSON` writes a raw value (a
hand-made entry); `hold` makes the next model call wait (a request in flight) until `release`;
`stream-pace S` makes each streamed item take S seconds in its container.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import socket
import sys
import threading
from pathlib import Path
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def refuse_network() -> None:
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] in LOOPBACK or sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise RuntimeError(f"network access attempted: {address!r}")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in LOOPBACK or host is None:
            return real_getaddrinfo(host, *args, **kwargs)
        raise RuntimeError(f"network access attempted: {host!r}")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


class _Aio:
    def __init__(self, fn: Any):
        self.aio = fn


#: modal drops a Dict entry after this long without a read or write of it (modal 1.6's dict.py).
DICT_EXPIRY_S = 7 * 86400.0


class StrictDict:
    """Stands for `modal.Dict`: values are pickled on `put` and unpickled on `get`, as Modal does,
    so nobody can mutate what another process will read; with a `clock`, an entry neither read nor
    written for 7 days is gone, as Modal drops it."""

    def __init__(self, clock: Any = None) -> None:
        self.data: dict[Any, bytes] = {}
        self.touched: dict[Any, float] = {}
        self.clock = clock

        def expire() -> None:
            if self.clock is not None:
                now = self.clock()
                for key in [k for k, at in self.touched.items() if now - at >= DICT_EXPIRY_S]:
                    self.data.pop(key, None)
                    self.touched.pop(key, None)

        def touch(key: Any) -> None:
            if self.clock is not None and key in self.data:
                self.touched[key] = self.clock()

        async def get(key: Any, default: Any = None) -> Any:
            expire()
            touch(key)
            return pickle.loads(self.data[key]) if key in self.data else default

        async def put(key: Any, value: Any, skip_if_exists: bool = False) -> bool:
            expire()
            if skip_if_exists and key in self.data:
                return False
            self.data[key] = pickle.dumps(value)
            touch(key)
            return True

        async def pop(key: Any, default: Any = None) -> Any:
            expire()
            self.touched.pop(key, None)
            return pickle.loads(self.data.pop(key)) if key in self.data else default

        async def keys() -> Any:
            expire()
            for key in list(self.data):
                yield key

        self.get, self.put, self.pop, self.keys = _Aio(get), _Aio(put), _Aio(pop), _Aio(keys)


class Volume:
    def __init__(self) -> None:
        self.commits = 0

    def commit(self) -> None:
        self.commits += 1


#: The streamed inputs running in "containers", by function call id (`FunctionCall.cancel` cancels one).
INPUTS: dict[str, "asyncio.Future[None]"] = {}
_INPUT_DONE = object()


class FunctionCall:
    """Stands for `modal.FunctionCall`: `from_id(id).cancel.aio()` cancels that input's task, as Modal's
    container does on a cancellation (an unknown id, or one that ended, is a no-op)."""

    def __init__(self, call_id: str) -> None:
        async def cancel(terminate_containers: bool = False) -> None:
            task = INPUTS.get(call_id)
            if task is not None:
                task.cancel()

        self.cancel = _Aio(cancel)

    @classmethod
    def from_id(cls, function_call_id: str, client: Any = None) -> "FunctionCall":
        return cls(function_call_id)


class Pools:
    """Stands for `ExperimentModel`: one container per (experiment, gpu) pool, running the real class."""

    def __init__(self, real_cls: Any, snapshot: bool, gpu_snapshot: bool) -> None:
        self.real_cls = real_cls
        self.snapshot, self.gpu_snapshot = snapshot, gpu_snapshot
        self.containers: dict[tuple[str, str | None], Any] = {}
        self.updates: list[dict[str, Any]] = []
        self.devices: list[str] = []
        self.gpu: str | None = None
        #: (experiment, pool version) of every model call, when it started and when it answered.
        self.calls: list[dict[str, Any]] = []
        #: How many containers started (each pool's first call starts one).
        self.starts = 0
        #: "next": set by `hold`, taken by the next model call; "holding": the call held (shared by variants).
        self.hold: dict[str, threading.Event | None] = {"next": None, "holding": None}
        #: Seconds each streamed item takes in its container (`stream-pace S`; shared by variants).
        self.pace = {"s": 0.0}

    def with_options(self, gpu: str | None = None, **_: Any) -> "Pools":
        variant = Pools.__new__(Pools)
        variant.__dict__.update(self.__dict__)
        variant.gpu = gpu
        return variant

    def __call__(self, experiment_id: str, definition: str) -> Any:
        import hashlib

        pools, key = self, (experiment_id, definition, self.gpu)
        version = hashlib.sha256(definition.encode()).hexdigest()[:12]

        async def container_for(call: dict[str, Any]) -> Any:
            pools.calls.append(call)
            if key not in pools.containers:  # Modal starts a container; it starts whatever happens to this input
                pools.containers[key] = asyncio.ensure_future(asyncio.to_thread(pools.start, experiment_id, definition))
            container = await asyncio.shield(pools.containers[key])
            held = pools.hold["next"]
            if held is not None:  # this request stays in flight on this pool until `release`
                pools.hold.update(next=None, holding=held)
                call["held"] = True
                await asyncio.to_thread(held.wait, 60)
            return container

        async def remote(inputs: list[str], params: Any, request_at: float | None = None) -> Any:
            import cloudpickle

            call = {"experiment": experiment_id, "version": version, "done": False}
            method = (await container_for(call))["methods"]["predict"]
            result = cloudpickle.loads(cloudpickle.dumps(await method(inputs, params, request_at)))
            call["done"] = True
            return result

        async def remote_gen(prompt: str, params: Any, request_at: float | None = None) -> Any:
            """A generator method's items, each crossing cloudpickle. As in Modal 1.6, the input runs in its
            container whether or not anyone reads its items: closing this generator only stops reading;
            `FunctionCall.from_id(id).cancel` cancels the input's task (Modal's container does so)."""
            import cloudpickle
            from modal._runtime.execution_context import _set_current_context_ids

            call_id = f"fc-{len(pools.calls)}"
            call = {"experiment": experiment_id, "version": version, "done": False, "stream": True, "call_id": call_id}
            method = (await container_for(call))["methods"]["stream"]
            outputs: asyncio.Queue[Any] = asyncio.Queue()

            async def run_input() -> None:
                _set_current_context_ids([f"in-{call_id}"], [call_id], ["attempt"])
                items = method(prompt, params, request_at)
                try:
                    async for item in items:
                        await asyncio.sleep(pools.pace["s"])  # `stream-pace`: a slow GPU's tokens
                        outputs.put_nowait(cloudpickle.loads(cloudpickle.dumps(item)))
                        call["items"] = call.get("items", 0) + 1
                    call["done"] = True
                except asyncio.CancelledError:
                    call["cancelled"] = True
                finally:
                    call["closed"] = True
                    await items.aclose()
                    outputs.put_nowait(_INPUT_DONE)

            INPUTS[call_id] = asyncio.ensure_future(run_input())
            while (item := await outputs.get()) is not _INPUT_DONE:
                yield item

        async def update_autoscaler(**settings: Any) -> None:
            pools.updates.append({"experiment": experiment_id, "version": version, "gpu": pools.gpu, **settings})

        predict = type("Method", (), {"remote": _Aio(remote)})()
        stream = type("Method", (), {"remote_gen": _Aio(remote_gen)})()
        return type("Obj", (), {"predict": predict, "stream": stream, "update_autoscaler": _Aio(update_autoscaler)})()

    def start(self, experiment_id: str, definition: str) -> dict[str, Any]:
        """A container: Modal's helpers build the instance and run its enter hooks, in Modal's order
        (`HARNESS_START_DELAY_S`: a slow start, e.g. a large model's download)."""
        import time

        import torch

        self.starts += 1
        time.sleep(float(os.environ.get("HARNESS_START_DELAY_S", "0")))
        from modal._partial_function import _find_callables_for_obj, _PartialFunctionFlags
        from modal._utils.async_utils import synchronizer

        obj = synchronizer._translate_in(self.real_cls(experiment_id=experiment_id, definition=definition))
        instance = obj._cached_user_cls_instance()
        real_to = torch.nn.Module.to

        def to(module: Any, *args: Any, **kwargs: Any) -> Any:  # no GPU here: record, do not move
            device = str(args[0] if args else kwargs.get("device"))
            self.devices.append(device)
            return module if device.startswith("cuda") else real_to(module, *args, **kwargs)

        torch.nn.Module.to = to  # type: ignore[method-assign]
        has_gpu = self.gpu_snapshot  # a snapshot phase has a GPU only with GPU snapshots
        torch.cuda.is_available = lambda: has_gpu if self.snapshot else False  # type: ignore[assignment]
        for hook in _find_callables_for_obj(instance, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT).values():
            hook()
        if self.snapshot:  # restored from the snapshot, on a GPU machine
            torch.cuda.is_available = lambda: True  # type: ignore[assignment]
        for hook in _find_callables_for_obj(instance, _PartialFunctionFlags.ENTER_POST_SNAPSHOT).values():
            hook()
        return {"instance": instance,
                "methods": _find_callables_for_obj(instance, _PartialFunctionFlags.CALLABLE_INTERFACE)}


def main() -> None:
    refuse_network()
    import uvicorn
    from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager
    from modal._utils.async_utils import synchronizer

    _TaskLifecycleManager._singleton = object()  # inside a container: `modal.is_local()` is False
    import backends.modal_backend.inference_api as api

    store, volume = StrictDict(), Volume()
    pools = Pools(api.ExperimentModel, api.config.memory_snapshot, api.config.gpu_snapshot)
    reconcile = synchronizer._translate_in(api.reconcile_windows)._raw_f
    web = synchronizer._translate_in(api.web)._raw_f
    if os.environ.get("HARNESS_WEB_WAIT_S"):  # Modal's web limit, scaled down for a test
        import backends.modal_backend.ingress as ingress

        ingress.MODAL_WEB_WAIT_S = float(os.environ["HARNESS_WEB_WAIT_S"])
    api.state, api.weights, api.ExperimentModel = store, volume, pools
    api.modal.FunctionCall = FunctionCall  # the ingress cancels a stream its client left (a network call)

    async def spawn(poke: bool = False) -> None:
        asyncio.get_running_loop().create_task(reconcile(poke=poke))

    api.reconcile_windows = type("Function", (), {"spawn": _Aio(spawn)})()
    from backends.modal_backend.registry_store import DictRegistrySource
    from backends.modal_backend.state_store import ModalDictStore
    from core.serving.registry import experiment_entry

    registry = DictRegistrySource(ModalDictStore(store), Path(api.settings.registry_path).parent)
    if os.environ.get("HARNESS_SEEDED"):
        asyncio.run(store.put.aio("registry-seeded", os.environ["HARNESS_SEEDED"]))
    app = web()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()

    def commands() -> None:
        for line in sys.stdin:
            command = line.strip()
            name, _, argument = command.partition(" ")
            if name == "registry-put":
                fields = json.loads(argument)
                experiment = experiment_entry(fields.pop("id"), fields, registry.base_dir)
                asyncio.run_coroutine_threadsafe(registry.put(experiment), loop).result(60)
            elif name == "registry-remove":
                asyncio.run_coroutine_threadsafe(registry.remove(argument), loop).result(60)
            elif name == "dict-put":
                key, _, value = argument.partition(" ")
                asyncio.run_coroutine_threadsafe(store.put.aio(key, json.loads(value)), loop).result(60)
            elif name == "hold":
                pools.hold["next"] = threading.Event()
            elif name == "stream-pace":
                pools.pace["s"] = float(argument)
            elif name == "release" and pools.hold["holding"] is not None:
                pools.hold["holding"].set()
            if command == "reconcile":
                asyncio.run_coroutine_threadsafe(reconcile(poke=True), loop).result(60)
            if command in ("reconcile", "report") or name in ("registry-put", "registry-remove", "dict-put", "hold", "release",
                                                                          "stream-pace"):
                keys = sorted(str(k) for k in store.data)
                print(json.dumps({"updates": pools.updates, "commits": volume.commits, "devices": pools.devices,
                                  "keys": keys, "applied": pickle.loads(store.data["applied"]) if "applied" in store.data else None,
                                  "torch_loaded": "torch" in sys.modules, "calls": pools.calls, "starts": pools.starts,
                                  "registry": sorted(k.removeprefix("registry/") for k in keys if k.startswith("registry/"))}),
                      flush=True)
            if command == "quit":
                server.should_exit = True
                return

    async def serve() -> None:
        task = loop.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(json.dumps({"port": port, "torch_loaded": "torch" in sys.modules, "module": api.__file__,
                          "cwd": os.getcwd()}), flush=True)
        threading.Thread(target=commands, daemon=True).start()
        await task

    loop.run_until_complete(serve())


if __name__ == "__main__":
    main()

"""Fakes at the Ray backend's network boundary, shared by its unit tests."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pytest


class FakeGcs:
    """Ray's GCS key-value store (`ray.experimental.internal_kv`), as strict as the real one: keys and
    values are bytes, every call names its namespace, and `fail` makes every call raise."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, bytes], bytes] = {}
        self.reads = 0
        self.reads_in: dict[str | None, int] = {}  # reads by namespace
        self.writes = 0
        self.fail = False

    def _check(self, key: bytes, namespace: str | None) -> tuple[str, bytes]:
        if self.fail:
            raise ConnectionError("GCS unreachable")
        assert isinstance(key, bytes) and isinstance(namespace, str), (key, namespace)
        return namespace, key

    def put(self, key: bytes, value: bytes, overwrite: bool = True, *, namespace: str | None = None) -> int:
        assert isinstance(value, bytes) and overwrite
        self.writes += 1
        self.data[self._check(key, namespace)] = value
        return 1

    def get(self, key: bytes, *, namespace: str | None = None) -> bytes | None:
        self.reads += 1
        self.reads_in[namespace] = self.reads_in.get(namespace, 0) + 1
        return self.data.get(self._check(key, namespace))

    def delete(self, key: bytes, *, namespace: str | None = None) -> int:
        return 1 if self.data.pop(self._check(key, namespace), None) is not None else 0

    def keys(self, prefix: bytes, *, namespace: str | None = None) -> list[bytes]:
        self._check(prefix, namespace)
        return [k for (ns, k) in self.data if ns == namespace and k.startswith(prefix)]


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcs]:
    from ray.experimental import internal_kv

    fake = FakeGcs()
    monkeypatch.setattr(internal_kv, "_internal_kv_initialized", lambda: True)
    monkeypatch.setattr(internal_kv, "_internal_kv_put", fake.put)
    monkeypatch.setattr(internal_kv, "_internal_kv_get", fake.get)
    monkeypatch.setattr(internal_kv, "_internal_kv_del", fake.delete)
    monkeypatch.setattr(internal_kv, "_internal_kv_list", fake.keys)
    yield fake


@contextmanager
def ray_app(settings: Any, timeout_s: float = 300) -> Iterator[str]:
    """The emulator's application served on this test session's Ray instance (the testing kit's Ray
    backend: started by the first module that needs it, shut down when the session ends), removed
    afterwards — so the Ray test files of one xdist worker pay Ray's and Serve's start-up once. The
    URL it serves on."""
    from backends.local_ray.ingress import APP_NAME
    from core.testing.backends import backend
    from core.testing.process import free_port

    ray_backend = backend("ray")
    started = ray_backend.start(settings, "127.0.0.1", free_port(), APP_NAME, timeout_s)
    try:
        yield started.url
    finally:
        ray_backend.stop(started)

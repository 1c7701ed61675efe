"""A model's status renders the same fields on every backend, plus that backend's own."""

from __future__ import annotations

import json

from core.serving.model_status import LoadHistory, ModelState, ModelStatus, PoolWindow

COMMON = {"state", "replicas", "last_cold_start", "last_error"}


def test_a_ray_status_shows_its_replicas_by_state() -> None:
    status = ModelStatus(ModelState.SCALING_DOWN, replicas=1, last_cold_start={"total_s": 2.5, "at": 10.0},
                         replica_states={"RUNNING": 1, "STOPPING": 1})
    shown = status.to_json()
    assert set(shown) == COMMON | {"replica_states"}
    assert shown["state"] == "scaling down" and shown["replicas"] == 1 and shown["last_cold_start"]["total_s"] == 2.5
    assert json.loads(json.dumps(shown)) == shown  # plain JSON types only


def test_a_modal_status_shows_its_pool_and_window_and_no_count() -> None:
    shown = ModelStatus(ModelState.WARM, replicas=None, pool=PoolWindow(300.0, 5.0, "v1")).to_json()
    assert set(shown) == COMMON | {"window_in_force_s", "checked_at", "pool"}
    assert (shown["replicas"], shown["window_in_force_s"], shown["pool"]) == (None, 300.0, "v1")


def test_an_in_process_status_shows_its_load_history() -> None:
    loads = LoadHistory(cold_loads=1, last_cold_load_ms=12.0, warm_hits=3, last_warm_lookup_ms=0.1, evictions=0,
                        size_bytes=2048)
    shown = ModelStatus(ModelState.FAILED, replicas=0, last_error="sha256 mismatch", loads=loads).to_json()
    assert set(shown) == COMMON | {"cold_loads", "last_cold_load_ms", "warm_hits", "last_warm_lookup_ms",
                                   "evictions", "size_bytes"}
    assert (shown["state"], shown["last_error"], shown["cold_loads"]) == ("failed", "sha256 mismatch", 1)


def test_a_status_is_frozen() -> None:
    status = ModelStatus(ModelState.COLD, replicas=0)
    try:
        status.replicas = 3  # type: ignore[misc]
    except AttributeError:
        return
    raise AssertionError("a ModelStatus could be changed after it was made")

"""Pools that idle at zero on the local Ray backend, over real HTTP and real Ray Serve: once a pool has
had no replica for `HYBRID_IDLE_POOL_TTL_S` and has nothing planned, its Serve application is deleted
(Serve's controller runs every deployed pool's policy each loop), it is still listed as cold, and its
next request deploys it again — a cold start like any other, with its window applied as before."""

from __future__ import annotations

import pytest

import time
from pathlib import Path

from core.testing import local_endpoint
from tests.conftest import pool_applications, wait_until

pytestmark = pytest.mark.session_ray  # on this session's Ray instance (tests/conftest.py)

TIME_SCALE = 300  # a 600 s window passes in 2 s
SETTINGS = {"base_warm_time": 600, "extension_time": 600, "activity_window": 300, "replica_memory_mb": 0,
            "idle_pool_ttl_s": 1}


def test_a_pool_idle_at_zero_goes_and_its_next_request_brings_it_back(tiny_models: dict[str, Path]) -> None:
    registry = {"fe": {"source": str(tiny_models["feature-extraction"]), "task": "feature-extraction"},
                "kept": {"source": str(tiny_models["feature-extraction"]), "task": "feature-extraction"}}
    with local_endpoint(registry, settings=SETTINGS, time_scale=TIME_SCALE,
                        name="idle-pools") as endpoint:
        started = time.monotonic()
        assert endpoint.predict("fe")["cold_load"] is True
        print(f"first request (deploys the pool, cold start): {time.monotonic() - started:.2f} s")
        assert pool_applications("idle-pools") == {"idle-pools--fe"}
        endpoint.wait_for_scale_to_zero("fe")
        wait_until(lambda: pool_applications("idle-pools") == set(), timeout_s=60, poll_s=0.5, what="fe's pool, idle at zero, to be deleted")
        listed = endpoint.experiment("fe")
        assert listed["state"] == "cold" and listed["replicas"] == 0
        assert listed["model"]["last_cold_start"] is not None  # what the ingress knew of it stays
        assert endpoint.experiment("kept")["state"] == "cold"  # never requested: never deployed

        started = time.monotonic()
        again = endpoint.predict("fe")
        print(f"first request after the pool was deleted: {time.monotonic() - started:.2f} s")
        assert again["cold_load"] is True and again["scaledown_window_s"] == 600
        assert pool_applications("idle-pools") == {"idle-pools--fe"}
        endpoint.assert_warm("fe")
        scaled = endpoint.wait_for_scale_to_zero("fe")  # the redeployed pool follows its window as before
        assert scaled["window_s"] == 600 and scaled["idle_s"] >= 600
        assert endpoint.scaling_events("fe") == ["cold_start", "scale_to_zero", "cold_start", "scale_to_zero"]

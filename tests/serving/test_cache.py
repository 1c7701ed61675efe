"""Model cache logic with the real loader on tiny models: single flight, LRU order, failures, timings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.serving.cache import ModelCache, ModelState
from core.serving.errors import ModelUnavailable
from core.serving.models import LoadedModel, load_model
from core.serving.registry import Experiment, Registry


@pytest.fixture
def experiments(registry_file: Path) -> Registry:
    return Registry.load(registry_file)


def test_single_flight_across_threads(experiments: Registry) -> None:
    calls: list[str] = []
    gate = threading.Event()

    def slow_loader(experiment: Experiment) -> LoadedModel:
        calls.append(experiment.id)
        gate.wait(5)
        return load_model(experiment)

    cache = ModelCache(slow_loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(experiments.get("fe")))) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert calls == ["fe"]
    assert len({id(r.model) for r in results}) == 1
    record = cache.state("fe")
    assert record.cold_loads == 1 and record.last_cold_load_s is not None and record.state is ModelState.WARM


def test_warm_lookups_are_recorded(experiments: Registry) -> None:
    cache = ModelCache(load_model)
    assert cache.get(experiments.get("fe")).cold is True
    hit = cache.get(experiments.get("fe"))
    assert hit.cold is False
    record = cache.state("fe")
    assert record.warm_hits == 1 and record.last_warm_lookup_s is not None
    assert record.last_warm_lookup_s < record.last_cold_load_s  # type: ignore[operator]


def test_lru_order_and_reload_after_eviction(experiments: Registry) -> None:
    cache = ModelCache(load_model, max_models=2)
    for experiment_id in ("fe", "clf", "fe", "gen"):
        cache.get(experiments.get(experiment_id))
    assert cache.cached_ids() == ["fe", "gen"]
    assert cache.state("clf").state is ModelState.COLD and cache.state("clf").evictions == 1
    assert cache.get(experiments.get("clf")).cold is True
    assert cache.cached_ids() == ["gen", "clf"]


def test_failed_load_is_reported_and_retried(experiments: Registry) -> None:
    cache = ModelCache(load_model)
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match="sha256"):
            cache.get(experiments.get("bad-sha"))
    record = cache.state("bad-sha")
    assert record.state is ModelState.FAILED and "sha256" in (record.last_error or "")
    assert cache.cached_ids() == []

"""The deployment's container cap shared among the pools (MODAL_MAX_CONTAINERS), as plain functions."""

from __future__ import annotations

import pytest

from core.keepwarm.container_budget import ContainerBudget
from core.settings import SettingsError, load_settings


def test_a_pool_grows_only_into_the_slots_the_others_leave_within_one_experiments_cap() -> None:
    budget = ContainerBudget(total=5, per_pool=3)
    assert budget.pool_limit("a", {}) == 3  # one experiment's cap
    assert budget.pool_limit("a", {"a": 1, "b": 3}) == 2  # its own and the one slot left
    assert budget.pool_limit("a", {"b": 4, "c": 1}) == 0  # nothing left: it cannot start
    assert budget.free({"a": 2, "b": 1}) == 2 and budget.free({"a": 6}) == 0


def test_a_cold_start_is_admitted_only_while_a_slot_is_free_and_a_running_pool_always() -> None:
    budget = ContainerBudget(total=2, per_pool=2)
    assert budget.admits("c", {"a": 1})
    assert not budget.admits("c", {"a": 1, "b": 1})
    assert budget.admits("a", {"a": 1, "b": 1})  # its containers serve it: no new one needed


def test_grants_let_recent_pools_double_within_the_cap_and_leave_the_rest_free() -> None:
    budget = ContainerBudget(total=10, per_pool=10)
    grants = budget.grants({"a": 2, "b": 1}, ["a", "b", "c"], growing=["b", "a"])
    assert grants == {"a": 4, "b": 2, "c": 0}  # room to double; 4 of the 7 free slots stay free for cold starts
    assert {p: budget.modal_limit(g) for p, g in grants.items()}["c"] == 1  # Modal's least: the ingress holds c
    assert budget.grants({"a": 9}, ["a", "b"], growing=["a", "b"]) == {"a": 10, "b": 0}  # a first: the one left
    tight = ContainerBudget(total=5, per_pool=5)
    assert tight.grants({"a": 2, "b": 2}, ["a", "b"], growing=["b", "a"]) == {"a": 2, "b": 3}  # the most recent first
    one = ContainerBudget(total=10, per_pool=4)
    assert one.grants({"a": 3}, ["a", "b"], growing=["a", "b"]) == {"a": 4, "b": 1}  # one experiment's cap: 4


def test_one_experiments_cap_above_the_deployments_is_refused_naming_both() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env_file=None, max_containers=3, max_containers_per_experiment=4)
    message = str(refused.value)
    assert "HYBRID_MAX_CONTAINERS_PER_EXPERIMENT" in message and "MODAL_MAX_CONTAINERS" in message and "0..MODAL" in message
    settings = load_settings(env_file=None, max_containers=3)
    assert settings.experiment_max_containers == 3 and ContainerBudget.of(settings) == ContainerBudget(3, 3)
    assert load_settings(env_file=None, max_containers=3, max_containers_per_experiment=1).experiment_max_containers == 1

"""`RaySettings`: the keys only the local Ray backend reads (replica resources, the replica cap, idle pools).

Why this module exists: core's `Settings` holds what core uses; the emulator's own knobs belong to
the emulator. `RaySettings` extends core's class (so `settings.max_replicas` reads like any other
key), is registered under the `hybrid_serve.settings` entry point — `load_settings()`, `hybrid-serve
config` and `env_template.txt` see its keys with their ranges — and is the one type of settings the
Ray backend hands to its actors and replicas: validated, importable, pickled as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import SETTINGS_GROUP, Settings, SettingsError, load_settings, setting


class RaySettings(Settings):
    """Core's settings and the local Ray backend's."""

    replica_target_ongoing: int | None = setting(
        None, "HYBRID_REPLICA_TARGET_ONGOING",
        "integer ≥ 1: concurrent requests one replica should carry (unset: MODAL_CONCURRENT_INPUTS, as on Modal)", ge=1
    )
    replica_cpus: float = setting(
        0.125, "HYBRID_REPLICA_CPUS",
        "number > 0: CPUs Ray reserves for each replica (also its torch threads, at least 1)", gt=0
    )
    replica_memory_mb: int = setting(
        1024, "HYBRID_REPLICA_MEMORY_MB", "integer MiB ≥ 0 Ray reserves for each replica (0: none)", ge=0
    )
    max_replicas: int = setting(
        0, "HYBRID_MAX_REPLICAS",
        "integer ≥ 0: replicas across all experiments, within MODAL_MAX_CONTAINERS "
        "(0: as many as the cluster's CPUs and memory hold)", ge=0
    )
    idle_pool_ttl_s: float = setting(
        60.0, "HYBRID_IDLE_POOL_TTL_S",
        "seconds ≥ 0 a pool stays deployed at zero replicas with nothing planned before it is deleted "
        "(its next request deploys it again, ~1 s); 0: never delete", ge=0,
    )
    handle_idle_s: float = setting(
        30.0, "HYBRID_HANDLE_IDLE_S",
        "seconds ≥ 0 the ingress keeps its handle to a pool at zero replicas open (an open handle pushes its load "
        "to Serve five times a second; the next request opens it again)", ge=0,
    )
    max_cold_starts: int = setting(
        0, "HYBRID_MAX_COLD_STARTS", "integer ≥ 0: cold starts under way at once across experiments (0: the cluster's CPUs)",
        ge=0
    )
    warm_workers: int | None = setting(
        None, "HYBRID_WARM_WORKERS",
        "integer ≥ 0: idle Ray worker processes kept ready with torch imported (a Ray instance of our own only), so "
        "a cold start pays for its model alone; ~300 MB each at rest (unset: as many as cold starts at once, "
        "within MODAL_MAX_CONTAINERS, 4 at most; 0: none)",
        ge=0,
    )

    @property
    def target_ongoing(self) -> int:
        """Concurrent requests one replica carries before its pool scales up: what a Modal container
        takes (`MODAL_CONCURRENT_INPUTS`) unless `HYBRID_REPLICA_TARGET_ONGOING` says otherwise, so the
        emulator starts as many replicas for a load as Modal would start containers."""
        return self.replica_target_ongoing or self.modal_concurrent_inputs


def load_ray_settings(env_file: str | Path | None = ".env", **overrides: Any) -> RaySettings:
    """`load_settings` for the Ray backend's settings alone (its keys and core's)."""
    return load_settings(env_file, settings_cls=RaySettings, **overrides)


def ray_settings(settings: Settings, **changes: Any) -> RaySettings:
    """The settings as exactly a `RaySettings` (with `changes`), validated again: what crosses into Ray's
    processes. Settings loaded with every installed backend's keys (`load_settings()`) qualify;
    core's alone lack the Ray keys, and are refused with the reason."""
    if not isinstance(settings, RaySettings):
        raise SettingsError(
            f"the settings given to the Ray backend are {type(settings).__name__}, without its keys "
            f"(HYBRID_REPLICA_CPUS, ...); allowed: RaySettings (load_ray_settings()), or load_settings() where the "
            f"'ray' entry point of {SETTINGS_GROUP} is installed (reinstall hybrid-serve)"
        )
    if type(settings) is RaySettings and not changes:
        return settings
    values = {name: getattr(settings, name) for name in RaySettings.model_fields}
    return RaySettings.model_validate({**values, **changes})

"""`ModalSettings`: the keys only the Modal backend reads (app name, GPU, snapshots, authentication, the reconciler).

Why this module exists: core's `Settings` holds what core uses; what only a Modal deployment needs is
declared here, by the backend. `ModalSettings` extends core's class (so `settings.modal_gpu` reads
like any other key) and is registered under the `hybrid_serve.settings` entry point, so
`load_settings()`, `hybrid-serve config` and `env_template.txt` see its keys with their ranges, and a
bad value fails at load naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator

from core.settings import SETTINGS_GROUP, Settings, SettingsError, load_settings, setting


class ModalSettings(Settings):
    """Core's settings and the Modal backend's."""

    modal_app_name: str = setting("hybrid-serve", "MODAL_APP_NAME", "a Modal app name ([A-Za-z0-9_.-], ≤ 64)",
                                  pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    modal_gpu: str | None = setting("T4", "MODAL_GPU", "a Modal GPU type such as T4, L4, A10G, A100, H100; none: CPU only")
    memory_snapshot: bool = setting(False, "HYBRID_MEMORY_SNAPSHOT", "true or false: Modal memory snapshots of loaded models")
    gpu_snapshot: bool = setting(
        False, "HYBRID_GPU_SNAPSHOT", "true or false: with HYBRID_MEMORY_SNAPSHOT, snapshot GPU memory too (Modal alpha)"
    )
    proxy_auth: bool = setting(False, "HYBRID_PROXY_AUTH", "true or false: require Modal proxy auth tokens on the endpoint")
    public_endpoint: bool = setting(
        False, "HYBRID_PUBLIC_ENDPOINT",
        "true or false: deploy without any authentication (default false: proxy auth unless a bearer token secret is set)",
    )
    api_token_secret: str | None = setting(
        None, "HYBRID_API_TOKEN_SECRET", "name of a modal.Secret holding HYBRID_API_TOKEN (bearer token); unset: none"
    )
    window_update_interval_s: float = setting(
        10.0, "HYBRID_WINDOW_UPDATE_INTERVAL_S",
        "seconds ≥ 0: least time between two reconciler passes that requests trigger (update_autoscaler calls)", ge=0
    )
    reconcile_interval_s: float = setting(
        60.0, "HYBRID_RECONCILE_INTERVAL_S",
        "seconds 10..3600: the window reconciler runs at least this often (pre-warms, re-application after a deploy)",
        ge=10, le=3600,
    )

    @field_validator("modal_gpu")
    @classmethod
    def _cpu_only(cls, value: str | None) -> str | None:
        return None if value is None or value.strip().lower() in {"none", "cpu"} else value.strip()

    def cost_gpu_default(self) -> str | None:
        """The ledger prices the deploy's GPU (a CPU-only deploy: one core)."""
        return self.modal_gpu or "CPU"

    @model_validator(mode="after")
    def _gpu_snapshot_needs_a_memory_snapshot(self) -> "ModalSettings":
        if self.gpu_snapshot and not self.memory_snapshot:
            raise ValueError("HYBRID_GPU_SNAPSHOT=true needs HYBRID_MEMORY_SNAPSHOT=true; allowed: set both, or leave "
                             "HYBRID_GPU_SNAPSHOT false")
        return self


def load_modal_settings(env_file: str | Path | None = ".env", **overrides: Any) -> ModalSettings:
    """`load_settings` for the Modal backend's settings alone (its keys and core's)."""
    return load_settings(env_file, settings_cls=ModalSettings, **overrides)


def modal_settings(settings: Settings) -> ModalSettings:
    """The settings as the Modal backend reads them; core's alone lack its keys and are refused with the reason."""
    if not isinstance(settings, ModalSettings):
        raise SettingsError(
            f"the settings given to the Modal backend are {type(settings).__name__}, without its keys "
            f"(MODAL_APP_NAME, ...); allowed: ModalSettings (load_modal_settings()), or load_settings() where the "
            f"'modal' entry point of {SETTINGS_GROUP} is installed (reinstall hybrid-serve)"
        )
    return settings

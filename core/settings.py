"""Settings: every knob of hybrid-serve, read from the environment and `.env`, checked at load time.

Why this module exists: a window Modal would reject (outside 2..3600 s) or a half-configured token
pair must fail when the settings are *loaded*, with a message naming the variable, its value and the
allowed range, not minutes later at deploy time. Precedence, highest first: explicit keyword
arguments, the environment, the `.env` file, the named preset (`HYBRID_PRESET`), the defaults.
Secrets are `SecretStr` and never appear in a repr, a dump or an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MODAL_MIN_WINDOW_S = 2
MODAL_MAX_WINDOW_S = 3600

PresetName = Literal["conservative", "balanced", "performance"]

#: The configuration guide's named presets (base warm time, extension, activity window), seconds.
PRESETS: dict[str, dict[str, int]] = {
    "conservative": {"MODAL_BASE_WARM_TIME": 600, "MODAL_EXTENSION_TIME": 600, "MODAL_ACTIVITY_WINDOW": 300},
    "balanced": {"MODAL_BASE_WARM_TIME": 900, "MODAL_EXTENSION_TIME": 900, "MODAL_ACTIVITY_WINDOW": 300},
    "performance": {"MODAL_BASE_WARM_TIME": 1800, "MODAL_EXTENSION_TIME": 1800, "MODAL_ACTIVITY_WINDOW": 600},
}

SECRET_VARIABLES = ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "HYBRID_API_TOKEN")


class SettingsError(ValueError):
    """Invalid settings; the message names each variable, its value (never a secret's) and the allowed range."""


def _setting(default: Any, env: str, allowed: str, **constraints: Any) -> Any:
    return Field(default, validation_alias=env, json_schema_extra={"env": env, "allowed": allowed}, **constraints)


class Settings(BaseSettings):
    """The effective configuration. Build it with `load_settings()` to get `SettingsError` on bad input."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    modal_token_id: SecretStr | None = _setting(None, "MODAL_TOKEN_ID", "any token string, set together with MODAL_TOKEN_SECRET")
    modal_token_secret: SecretStr | None = _setting(None, "MODAL_TOKEN_SECRET", "any token string, set together with MODAL_TOKEN_ID")
    preset: PresetName | None = _setting(None, "HYBRID_PRESET", "one of conservative, balanced, performance")
    base_warm_time: int = _setting(
        900, "MODAL_BASE_WARM_TIME", f"integer seconds in {MODAL_MIN_WINDOW_S}..{MODAL_MAX_WINDOW_S}",
        ge=MODAL_MIN_WINDOW_S, le=MODAL_MAX_WINDOW_S,
    )
    extension_time: int = _setting(
        900, "MODAL_EXTENSION_TIME", f"integer seconds ≥ 0 with base + extension ≤ {MODAL_MAX_WINDOW_S}",
        ge=0, le=MODAL_MAX_WINDOW_S,
    )
    activity_window: int = _setting(300, "MODAL_ACTIVITY_WINDOW", "integer seconds > 0", gt=0)
    max_containers: int = _setting(10, "MODAL_MAX_CONTAINERS", "integer ≥ 1", ge=1)

    # --- model server (core/serving, core/http) -------------------------------------------------
    registry_path: Path | None = _setting(
        None, "HYBRID_REGISTRY", "path of a TOML experiment registry (unset: the shipped demo registry)"
    )
    registry_poll_s: float = _setting(
        1.0, "HYBRID_REGISTRY_POLL_S", "seconds 0.1..3600 between two checks of the registry for changes", ge=0.1, le=3600
    )
    mlflow_poll_s: float = _setting(
        30.0, "HYBRID_MLFLOW_POLL_S", "seconds 1..86400 between two resolutions of mlflow:…@ALIAS sources", ge=1, le=86400
    )
    mlflow_timeout_s: float = _setting(
        30.0, "HYBRID_MLFLOW_TIMEOUT_S",
        "seconds 1..3600 an MLflow call may go unanswered (resolving a source; each request of a download)",
        ge=1, le=3600,
    )
    mlflow_cache: Path | None = _setting(
        None, "HYBRID_MLFLOW_CACHE", "folder for models downloaded from MLflow (unset: ~/.cache/hybrid-serve/mlflow)"
    )
    cache_max_models: int = _setting(4, "HYBRID_CACHE_MAX_MODELS", "integer ≥ 1", ge=1)
    cache_max_memory_mb: int = _setting(
        4096, "HYBRID_CACHE_MAX_MEMORY_MB", "integer MiB ≥ 0 (0: no memory budget)", ge=0
    )
    max_batch_size: int = _setting(32, "HYBRID_MAX_BATCH_SIZE", "integer 1..1024", ge=1, le=1024)
    batch_wait_ms: float = _setting(0.0, "HYBRID_BATCH_WAIT_MS", "milliseconds 0..1000", ge=0, le=1000)
    max_body_bytes: int = _setting(1_048_576, "HYBRID_MAX_BODY_BYTES", "integer bytes ≥ 64", ge=64)
    max_inputs: int = _setting(64, "HYBRID_MAX_INPUTS", "integer 1..4096", ge=1, le=4096)
    max_new_tokens: int = _setting(128, "HYBRID_MAX_NEW_TOKENS", "integer 1..4096", ge=1, le=4096)
    max_queue: int = _setting(
        256, "HYBRID_MAX_QUEUE", "integer ≥ 1: requests that may wait per experiment (beyond: 503 + Retry-After)", ge=1
    )
    header_timeout_s: float = _setting(
        10.0, "HYBRID_HEADER_TIMEOUT_S", "seconds > 0 a client may take to send a request's headers", gt=0
    )
    body_timeout_s: float = _setting(
        30.0, "HYBRID_BODY_TIMEOUT_S", "seconds > 0 a client may pause while sending a request body (then 408)", gt=0
    )
    shutdown_timeout_s: float = _setting(
        30.0, "HYBRID_SHUTDOWN_TIMEOUT_S", "seconds > 0 in-flight requests get to finish on Ctrl-C (queued ones: 503)", gt=0
    )

    # --- keep-warm policy (core/keepwarm) -------------------------------------------------------
    policy_name: Literal["hybrid", "adaptive"] = _setting(
        "hybrid", "HYBRID_POLICY", "hybrid (the guide's base/extension policy) or adaptive (learned per experiment)"
    )
    adaptive_kappa: float = _setting(
        320.0, "HYBRID_ADAPTIVE_KAPPA", "number > 0: price of one cold start in idle container-minutes (for an experiment of typical gaps; scaled per experiment)", gt=0
    )

    prewarm_lead_s: float = _setting(
        60.0, "HYBRID_PREWARM_LEAD_S", "seconds ≥ 0 (real time): start a pre-warm this much before the request is due", ge=0
    )

    # --- local emulation (backends/local_ray) ----------------------------------------------------
    time_scale: float = _setting(
        1.0, "HYBRID_TIME_SCALE", "number 1..3600: every window (and the activity window) runs this many times faster",
        ge=1, le=3600,
    )
    event_log: Path | None = _setting(None, "HYBRID_EVENT_LOG", "path of a JSON-lines scaling event log (unset: none)")
    cold_start_timeout_s: float = _setting(
        300.0, "HYBRID_COLD_START_TIMEOUT_S", "seconds > 0 a request waits for a cold start before 504", gt=0
    )
    replica_target_ongoing: int | None = _setting(
        None, "HYBRID_REPLICA_TARGET_ONGOING",
        "integer ≥ 1: concurrent requests one replica should carry (unset: MODAL_CONCURRENT_INPUTS, as on Modal)", ge=1
    )
    replica_cpus: float = _setting(
        0.125, "HYBRID_REPLICA_CPUS",
        "number > 0: CPUs Ray reserves for each replica (also its torch threads, at least 1)", gt=0
    )
    replica_memory_mb: int = _setting(
        1024, "HYBRID_REPLICA_MEMORY_MB", "integer MiB ≥ 0 Ray reserves for each replica (0: none)", ge=0
    )
    max_replicas: int = _setting(
        0, "HYBRID_MAX_REPLICAS",
        "integer ≥ 0: replicas across all experiments (0: as many as the cluster's CPUs and memory hold)", ge=0
    )
    idle_pool_ttl_s: float = _setting(
        60.0, "HYBRID_IDLE_POOL_TTL_S",
        "seconds ≥ 0 a pool stays deployed at zero replicas with nothing planned before it is deleted "
        "(its next request deploys it again, ~1 s); 0: never delete", ge=0,
    )
    max_cold_starts: int = _setting(
        0, "HYBRID_MAX_COLD_STARTS", "integer ≥ 0: cold starts under way at once across experiments (0: the cluster's CPUs)",
        ge=0
    )

    # --- Modal deployment (backends/modal_backend) -------------------------------------------------
    modal_app_name: str = _setting("hybrid-serve", "MODAL_APP_NAME", "a Modal app name ([A-Za-z0-9_.-], ≤ 64)",
                                   pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    modal_gpu: str | None = _setting("T4", "MODAL_GPU", "a Modal GPU type such as T4, L4, A10G, A100, H100; none: CPU only")
    modal_concurrent_inputs: int = _setting(
        32, "MODAL_CONCURRENT_INPUTS", "integer 1..1000: inputs one container takes at once (@modal.concurrent)", ge=1, le=1000
    )
    memory_snapshot: bool = _setting(False, "HYBRID_MEMORY_SNAPSHOT", "true or false: Modal memory snapshots of loaded models")
    gpu_snapshot: bool = _setting(
        False, "HYBRID_GPU_SNAPSHOT", "true or false: with HYBRID_MEMORY_SNAPSHOT, snapshot GPU memory too (Modal alpha)"
    )
    proxy_auth: bool = _setting(False, "HYBRID_PROXY_AUTH", "true or false: require Modal proxy auth tokens on the endpoint")
    public_endpoint: bool = _setting(
        False, "HYBRID_PUBLIC_ENDPOINT",
        "true or false: deploy without any authentication (default false: proxy auth unless a bearer token secret is set)",
    )
    api_token_secret: str | None = _setting(
        None, "HYBRID_API_TOKEN_SECRET", "name of a modal.Secret holding HYBRID_API_TOKEN (bearer token); unset: none"
    )
    api_token: SecretStr | None = _setting(
        None, "HYBRID_API_TOKEN", "a bearer token clients must send (unset: no token required)"
    )
    window_update_interval_s: float = _setting(
        10.0, "HYBRID_WINDOW_UPDATE_INTERVAL_S",
        "seconds ≥ 0: least time between two reconciler passes that requests trigger (update_autoscaler calls)", ge=0
    )
    reconcile_interval_s: float = _setting(
        60.0, "HYBRID_RECONCILE_INTERVAL_S",
        "seconds 10..3600: the window reconciler runs at least this often (pre-warms, re-application after a deploy)",
        ge=10, le=3600,
    )

    @field_validator("modal_gpu")
    @classmethod
    def _cpu_only(cls, value: str | None) -> str | None:
        return None if value is None or value.strip().lower() in {"none", "cpu"} else value.strip()

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> "Settings":
        if (self.modal_token_id is None) != (self.modal_token_secret is None):
            which = "MODAL_TOKEN_ID" if self.modal_token_id is not None else "MODAL_TOKEN_SECRET"
            raise ValueError(
                f"MODAL_TOKEN_ID / MODAL_TOKEN_SECRET: only {which} is set; allowed: set both "
                "(production mode) or neither (development mode, web authentication via `modal setup`)"
            )
        if self.gpu_snapshot and not self.memory_snapshot:
            raise ValueError("HYBRID_GPU_SNAPSHOT=true needs HYBRID_MEMORY_SNAPSHOT=true; allowed: set both, or leave "
                             "HYBRID_GPU_SNAPSHOT false")
        if self.base_warm_time + self.extension_time > MODAL_MAX_WINDOW_S:
            raise ValueError(
                f"MODAL_BASE_WARM_TIME + MODAL_EXTENSION_TIME = {self.base_warm_time} + {self.extension_time} = "
                f"{self.base_warm_time + self.extension_time}; allowed: a sum ≤ {MODAL_MAX_WINDOW_S} "
                f"(Modal's scaledown window must be {MODAL_MIN_WINDOW_S}..{MODAL_MAX_WINDOW_S} s)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        preset = PresetSource(settings_cls, (init_settings, env_settings, dotenv_settings))
        return init_settings, env_settings, dotenv_settings, preset

    # --- derived, read-only views -------------------------------------------------------------
    @property
    def idle_window_s(self) -> int:
        """Scaledown window after an isolated request."""
        return self.base_warm_time

    @property
    def active_window_s(self) -> int:
        """Scaledown window after a request with recent activity."""
        return self.base_warm_time + self.extension_time

    @property
    def target_ongoing(self) -> int:
        """Concurrent requests one replica carries before its pool scales up: what a Modal container
        takes (`MODAL_CONCURRENT_INPUTS`) unless `HYBRID_REPLICA_TARGET_ONGOING` says otherwise, so the
        emulator starts as many replicas for a load as Modal would start containers."""
        return self.replica_target_ongoing or self.modal_concurrent_inputs

    def public_dict(self) -> dict[str, Any]:
        """Every setting by variable name, secrets reduced to whether they are set (no prefix, no length)."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            out[env_name(field)] = ("set" if value is not None else "unset") if isinstance(value, SecretStr) or env_name(field) in SECRET_VARIABLES else value
        return out


def env_name(field: FieldInfo) -> str:
    """The environment variable that feeds a settings field."""
    return str(field.validation_alias)


class PresetSource(PydanticBaseSettingsSource):
    """Supplies the values of the preset named by HYBRID_PRESET, below every explicit variable."""

    def __init__(self, settings_cls: type[BaseSettings], upstream: tuple[PydanticBaseSettingsSource, ...]):
        super().__init__(settings_cls)
        self._upstream = upstream

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def preset_name(self) -> str | None:
        for source in self._upstream:
            values = source()
            for key in ("HYBRID_PRESET", "preset"):
                if values.get(key):
                    return str(values[key])
        return None

    def __call__(self) -> dict[str, Any]:
        name = self.preset_name()
        # An unknown name is left to the field's own validation, which names HYBRID_PRESET.
        return dict(PRESETS.get(name, {})) if name else {}


def _format_error(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ()
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    variable = str(loc[0])
    field = next((f for f in Settings.model_fields.values() if env_name(f) == variable), None)
    allowed = (field.json_schema_extra or {}).get("allowed", "") if field else ""  # type: ignore[union-attr]
    shown = "<hidden>" if variable in SECRET_VARIABLES else repr(error.get("input"))
    return f"{variable}={shown}: {message.lower()}; allowed: {allowed}"


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Load and validate the settings; raise `SettingsError` whose message names every bad variable."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "\n".join(f"  - {_format_error(e)}" for e in exc.errors(include_input=True, include_url=False))
        raise SettingsError(f"invalid hybrid-serve settings:\n{problems}") from None


def setting_sources(env_file: str | Path | None = ".env", **overrides: Any) -> dict[str, str]:
    """Where each effective setting came from, by variable name: argument, environment, .env, preset or default."""
    init = _StaticSource(Settings, overrides)
    env = EnvSettingsSource(Settings, env_ignore_empty=True)
    dotenv = DotEnvSettingsSource(Settings, env_file=env_file, env_ignore_empty=True)
    preset = PresetSource(Settings, (init, env, dotenv))
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("argument", overrides), ("environment", env()), (".env", dotenv()),
        (f"preset {preset.preset_name()}", preset()),
    ]
    result: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        variable = env_name(field)
        result[variable] = next((label for label, values in layers if variable in values or name in values), "default")
    return result


class _StaticSource(PydanticBaseSettingsSource):
    """Fixed values (keyword overrides) presented as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]):
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)

"""Settings: core's knobs of hybrid-serve — and, through entry points, every backend's — read from the
environment and `.env`, checked at load time.

Why this module exists: a window Modal would reject (outside 2..3600 s) or a half-configured token
pair must fail when the settings are *loaded*, with a message naming the variable, its value and the
allowed range, not minutes later at deploy time. Precedence, highest first: explicit keyword
arguments, the environment, the `.env` file, the named preset (`HYBRID_PRESET`), the defaults.
Secrets are `SecretStr` and never appear in a repr, a dump or an error.

`Settings` holds what core uses (and the few keys both remote backends share); it inherits the keys of
two topics from a base class each (the Modal token pair and windows; the model server's), so that each
topic reads on its own. A backend declares its own keys in a subclass of it
(`backends/local_ray/settings.py`, `backends/modal_backend/settings.py`) registered under the
`hybrid_serve.settings` entry-point group; `settings_class()` composes core's class with every
registered one, so `load_settings()` validates, `hybrid-serve config` prints and `env_template.txt`
lists every variable, while core never imports a backend.
"""

from __future__ import annotations

import difflib
import logging
import os
from functools import lru_cache
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping, Self, TypeVar

from dotenv import dotenv_values
from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core import plugins
from core.prices import Price, price_of, price_table

log = logging.getLogger("hybrid_serve.settings")

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

#: The entry-point group under which a backend registers its settings class (a subclass of `Settings`).
SETTINGS_GROUP = "hybrid_serve.settings"


class SettingsError(ValueError):
    """Invalid settings; the message names each variable, its value (never a secret's) and the allowed range."""


def _fixed_windows_in_modals_range(value: str) -> str:
    """HYBRID_POLICY=fixed:SECONDS[:BURST_SECONDS]: both windows within Modal's range, the burst one no longer."""
    windows = [int(w) for w in value.split(":")[1:]]
    if windows and not all(MODAL_MIN_WINDOW_S <= w <= MODAL_MAX_WINDOW_S for w in windows) or windows[1:2] > windows[:1]:
        raise ValueError(f"{value!r}: windows in {MODAL_MIN_WINDOW_S}..{MODAL_MAX_WINDOW_S} s, the extra containers' "
                         "no longer than the last one's")
    return value


def setting(default: Any, env: str, allowed: str, **constraints: Any) -> Any:
    """A settings field fed by the variable `env`; `allowed` (the range, in words) goes into every error and
    into `hybrid-serve config`. Backends declare their keys with it too."""
    return Field(default, validation_alias=env, json_schema_extra={"env": env, "allowed": allowed}, **constraints)


class _ModalWindowKeys(BaseSettings):
    """The Modal keys: the token pair, the keep-warm windows and the preset that sets them, with the rules
    that tie them together and the windows they imply. A base of `Settings`, so each topic reads on its own."""

    modal_token_id: SecretStr | None = setting(None, "MODAL_TOKEN_ID", "any token string, set together with MODAL_TOKEN_SECRET")
    modal_token_secret: SecretStr | None = setting(None, "MODAL_TOKEN_SECRET", "any token string, set together with MODAL_TOKEN_ID")
    preset: PresetName | None = setting(None, "HYBRID_PRESET", "one of conservative, balanced, performance")
    base_warm_time: int = setting(
        900, "MODAL_BASE_WARM_TIME", f"integer seconds in {MODAL_MIN_WINDOW_S}..{MODAL_MAX_WINDOW_S}",
        ge=MODAL_MIN_WINDOW_S, le=MODAL_MAX_WINDOW_S,
    )
    extension_time: int = setting(
        900, "MODAL_EXTENSION_TIME", f"integer seconds ≥ 0 with base + extension ≤ {MODAL_MAX_WINDOW_S}",
        ge=0, le=MODAL_MAX_WINDOW_S,
    )
    activity_window: int = setting(300, "MODAL_ACTIVITY_WINDOW", "integer seconds > 0", gt=0)
    max_containers: int = setting(
        10, "MODAL_MAX_CONTAINERS", "integer ≥ 1: containers of the whole deployment, every experiment's together", ge=1
    )
    max_containers_per_experiment: int = setting(
        0, "HYBRID_MAX_CONTAINERS_PER_EXPERIMENT",
        "integer 0..MODAL_MAX_CONTAINERS: containers of one experiment (0: up to MODAL_MAX_CONTAINERS)", ge=0,
    )

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> Self:
        if (self.modal_token_id is None) != (self.modal_token_secret is None):
            which = "MODAL_TOKEN_ID" if self.modal_token_id is not None else "MODAL_TOKEN_SECRET"
            raise ValueError(
                f"MODAL_TOKEN_ID / MODAL_TOKEN_SECRET: only {which} is set; allowed: set both "
                "(production mode) or neither (development mode, web authentication via `modal setup`)"
            )
        if self.max_containers_per_experiment > self.max_containers:
            raise ValueError(
                f"HYBRID_MAX_CONTAINERS_PER_EXPERIMENT = {self.max_containers_per_experiment}; allowed: 0..MODAL_MAX_CONTAINERS "
                f"({self.max_containers}): one experiment cannot run more containers than the whole deployment"
            )
        if self.base_warm_time + self.extension_time > MODAL_MAX_WINDOW_S:
            raise ValueError(
                f"MODAL_BASE_WARM_TIME + MODAL_EXTENSION_TIME = {self.base_warm_time} + {self.extension_time} = "
                f"{self.base_warm_time + self.extension_time}; allowed: a sum ≤ {MODAL_MAX_WINDOW_S} "
                f"(Modal's scaledown window must be {MODAL_MIN_WINDOW_S}..{MODAL_MAX_WINDOW_S} s)"
            )
        return self

    @property
    def experiment_max_containers(self) -> int:
        """The most containers one experiment may run: HYBRID_MAX_CONTAINERS_PER_EXPERIMENT, else the
        deployment's whole cap (MODAL_MAX_CONTAINERS)."""
        return self.max_containers_per_experiment or self.max_containers

    @property
    def idle_window_s(self) -> int:
        """Scaledown window after an isolated request."""
        return self.base_warm_time

    @property
    def active_window_s(self) -> int:
        """Scaledown window after a request with recent activity."""
        return self.base_warm_time + self.extension_time


class _ModelServerKeys(BaseSettings):
    """The model server's keys (core/serving, core/http): registry, MLflow, cache, batching, request limits
    and timeouts. A base of `Settings`, so each topic reads on its own."""

    registry_path: Path | None = setting(
        None, "HYBRID_REGISTRY", "path of a TOML experiment registry (unset: the shipped demo registry)"
    )
    registry_poll_s: float = setting(
        1.0, "HYBRID_REGISTRY_POLL_S", "seconds 0.1..3600 between two checks of the registry for changes", ge=0.1, le=3600
    )
    mlflow_poll_s: float = setting(
        30.0, "HYBRID_MLFLOW_POLL_S", "seconds 1..86400 between two resolutions of mlflow:…@ALIAS sources", ge=1, le=86400
    )
    mlflow_timeout_s: float = setting(
        30.0, "HYBRID_MLFLOW_TIMEOUT_S",
        "seconds 1..3600 an MLflow call may go unanswered (resolving a source; each request of a download)",
        ge=1, le=3600,
    )
    mlflow_cache: Path | None = setting(
        None, "HYBRID_MLFLOW_CACHE", "folder for models downloaded from MLflow (unset: ~/.cache/hybrid-serve/mlflow)"
    )
    cache_max_models: int = setting(4, "HYBRID_CACHE_MAX_MODELS", "integer ≥ 1", ge=1)
    cache_max_memory_mb: int = setting(
        4096, "HYBRID_CACHE_MAX_MEMORY_MB", "integer MiB ≥ 0 (0: no memory budget)", ge=0
    )
    max_batch_size: int = setting(32, "HYBRID_MAX_BATCH_SIZE", "integer 1..1024", ge=1, le=1024)
    batch_wait_ms: float = setting(0.0, "HYBRID_BATCH_WAIT_MS", "milliseconds 0..1000", ge=0, le=1000)
    max_body_bytes: int = setting(1_048_576, "HYBRID_MAX_BODY_BYTES", "integer bytes ≥ 64", ge=64)
    max_inputs: int = setting(64, "HYBRID_MAX_INPUTS", "integer 1..4096", ge=1, le=4096)
    max_new_tokens: int = setting(128, "HYBRID_MAX_NEW_TOKENS", "integer 1..4096", ge=1, le=4096)
    max_queue: int = setting(
        256, "HYBRID_MAX_QUEUE", "integer ≥ 1: requests that may wait per experiment (beyond: 503 + Retry-After)", ge=1
    )
    header_timeout_s: float = setting(
        10.0, "HYBRID_HEADER_TIMEOUT_S", "seconds > 0 a client may take to send a request's headers", gt=0
    )
    body_timeout_s: float = setting(
        30.0, "HYBRID_BODY_TIMEOUT_S", "seconds > 0 a client may pause while sending a request body (then 408)", gt=0
    )
    shutdown_timeout_s: float = setting(
        30.0, "HYBRID_SHUTDOWN_TIMEOUT_S", "seconds > 0 in-flight requests get to finish on Ctrl-C (queued ones: 503)", gt=0
    )


# The bases' order fixes the variables' order: pydantic lists the last base's fields first, then those of the
# base before it, then the class's own — the Modal keys, the model server's, the rest, in the order
# `hybrid-serve config` and `env_template.txt` show them.
class Settings(_ModelServerKeys, _ModalWindowKeys):
    """The effective configuration. Build it with `load_settings()` to get `SettingsError` on bad input."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        allow_inf_nan=False,  # "inf" is no number of seconds or dollars: refused, naming the variable
    )

    # --- keep-warm policy (core/keepwarm) -------------------------------------------------------
    policy_name: Annotated[str, AfterValidator(_fixed_windows_in_modals_range)] = setting(
        "hybrid", "HYBRID_POLICY", "hybrid (the guide's base/extension policy), adaptive (learned per experiment) or "
        f"fixed:SECONDS[:BURST_SECONDS] (one window for every experiment, {MODAL_MIN_WINDOW_S} ≤ BURST_SECONDS ≤ SECONDS ≤ "
        f"{MODAL_MAX_WINDOW_S}; BURST_SECONDS: the extra containers' shorter window)",
        pattern=r"^(hybrid|adaptive|fixed:[0-9]{1,4}(:[0-9]{1,4})?)$",
    )
    adaptive_kappa: float = setting(
        320.0, "HYBRID_ADAPTIVE_KAPPA", "number > 0: price of one cold start in idle container-minutes (for an experiment of typical gaps; scaled per experiment)", gt=0
    )

    prewarm_lead_s: float = setting(  # the adaptive policy's pre-warms, as both remote backends apply them
        60.0, "HYBRID_PREWARM_LEAD_S", "seconds ≥ 0 (real time): start a pre-warm this much before the request is due (or the experiment's measured cold start, if longer)", ge=0
    )

    # --- emulated time and the event log (core.serving.request_path, core.testing) -------------
    time_scale: float = setting(
        1.0, "HYBRID_TIME_SCALE", "number 1..3600: every window (and the activity window) runs this many times faster",
        ge=1, le=3600,
    )
    event_log: Path | None = setting(None, "HYBRID_EVENT_LOG", "path of a JSON-lines scaling event log (unset: none)")
    event_log_requests: bool = setting(
        True, "HYBRID_EVENT_LOG_REQUESTS", "true or false: the event log (HYBRID_EVENT_LOG) gets a line per request's "
        "arrival too, besides the scaling events and registry changes"
    )
    log_requests: bool = setting(
        False, "HYBRID_LOG_REQUESTS", "true or false: the console of `hybrid-serve serve` shows a line per request too "
        "(cold starts, scale-downs, pre-warms and registry changes it always shows)"
    )

    # --- the traffic recording (core/recording.py, core/serving/traffic.py) ------------------------
    traffic_record: bool = setting(
        True, "HYBRID_TRAFFIC_RECORD", "true or false: record each request's time, experiment, status, duration, "
        "cold or warm and queue wait (never inputs or outputs), and the scaling events"
    )
    traffic_dir: Path = setting(
        Path("~/.local/state/hybrid-serve/traffic"), "HYBRID_TRAFFIC_DIR", "directory of the traffic recording "
        "(on Modal: a Volume's, set by the deploy)"
    )
    traffic_max_mb: float = setting(
        256.0, "HYBRID_TRAFFIC_MAX_MB", "megabytes > 0 the recording keeps (the oldest segments go first)", gt=0
    )
    traffic_retention_days: float = setting(
        30.0, "HYBRID_TRAFFIC_RETENTION_DAYS", "days > 0 a record is kept", gt=0
    )

    # --- the cost ledger (core/keepwarm/ledger.py, core/prices.py) ----------------------------------
    cost_gpu: str | None = setting(
        None, "HYBRID_COST_GPU", "a GPU of the price table (" + ", ".join(price_table().per_second) + "; "
        "H100:2 for two); empty: MODAL_GPU, else T4"
    )
    cost_per_s: float | None = setting(
        None, "HYBRID_COST_PER_S", "dollars ≥ 0 per container-second (empty: the price table's for HYBRID_COST_GPU)", ge=0
    )
    api_token: SecretStr | None = setting(
        None, "HYBRID_API_TOKEN", "a bearer token clients must send (unset: no token required)"
    )

    # --- shared by both remote backends (core.serving.remote names the cold-start limit; the Ray
    # emulator carries as many concurrent requests per replica as a Modal container takes) ----------
    cold_start_timeout_s: float = setting(
        300.0, "HYBRID_COLD_START_TIMEOUT_S", "seconds > 0 a request waits for a cold start before 504", gt=0
    )
    modal_concurrent_inputs: int = setting(
        32, "MODAL_CONCURRENT_INPUTS", "integer 1..1000: inputs one container takes at once (@modal.concurrent)", ge=1, le=1000
    )

    @field_validator("cost_gpu")
    @classmethod
    def _priced_gpu(cls, value: str | None) -> str | None:
        if value is not None and price_table().lookup(value) is None:
            raise ValueError(f"no price for {value!r} in the price table")
        return value

    def cost_gpu_default(self) -> str | None:
        """The GPU the ledger prices when HYBRID_COST_GPU is empty (a backend's settings may know the deploy's)."""
        return None

    def price(self, gpu: str | None = None) -> Price:
        """What one container-second costs: HYBRID_COST_PER_S, else the table's price of `gpu` (an
        experiment's own), of HYBRID_COST_GPU, of the backend's GPU (`cost_gpu_default`), or of a T4."""
        return price_of(gpu or self.cost_gpu or self.cost_gpu_default(), self.cost_per_s)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_settings, dotenv_settings = ByVariableOnly(env_settings), ByVariableOnly(dotenv_settings)
        preset = PresetSource(settings_cls, (init_settings, env_settings, dotenv_settings))
        return init_settings, env_settings, dotenv_settings, preset

    def public_dict(self) -> dict[str, Any]:
        """Every setting by variable name, secrets reduced to whether they are set (no prefix, no length)."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            out[env_name(field)] = ("set" if value is not None else "unset") if isinstance(value, SecretStr) or env_name(field) in SECRET_VARIABLES else value
        return out


class ByVariableOnly(PydanticBaseSettingsSource):
    """The environment or a .env file read by each setting's documented variable only. Code may pass a
    field's name as an argument (`populate_by_name`), but a variable named after a field
    (`MAX_CONTAINERS`, or a secret's `API_TOKEN`) must not set anything — nor may a .env file's line
    that pydantic-settings would hand on as an "extra" under a field's name."""

    def __init__(self, inner: PydanticBaseSettingsSource):
        super().__init__(inner.settings_cls)
        inner.config = {**inner.config, "populate_by_name": False, "validate_by_name": False}
        self.inner = inner
        self._variables = {env_name(field) for field in inner.settings_cls.model_fields.values()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in self.inner().items() if key in self._variables}


#: The variable prefixes of hybrid-serve's settings: a name with one of them that is no setting is checked
#: for a near miss.
SETTING_PREFIXES = ("MODAL_", "HYBRID_")


def misspelt_variables(cls: type[BaseSettings], names: Iterable[str]) -> dict[str, str]:
    """Of `names` (the environment's, a .env file's), those that look like a setting's variable but are
    none, each with the variable it most likely meant (only near misses: other tools' MODAL_* names pass)."""
    known = [env_name(field) for field in cls.model_fields.values()]
    by_stem = {_stem(variable): variable for variable in known}  # MODAL_X and HYBRID_X mixed up
    out = {}
    for name in names:
        if not name.upper().startswith(SETTING_PREFIXES) or name.upper() in known:  # names match in any case
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.85)
        meant = by_stem.get(_stem(name.upper())) or (close[0] if close else None)
        if meant:
            out[name] = meant
    return out


def _stem(variable: str) -> str:
    return variable.split("_", 1)[1] if "_" in variable else variable


_warned: set[tuple[str, str]] = set()


def warn_misspelt(cls: type[BaseSettings], env_file: str | Path | None) -> None:
    """Log one warning per near-miss variable of the environment and of `env_file`."""
    sources = [("the environment", list(os.environ))]
    if env_file is not None and Path(env_file).is_file():
        sources.append((str(env_file), list(dotenv_values(env_file))))
    for where, names in sources:
        for name, meant in misspelt_variables(cls, names).items():
            if (where, name) in _warned:  # once per process: settings are loaded more than once
                continue
            _warned.add((where, name))
            log.warning("%s sets %s, which is no hybrid-serve setting: did you mean %s? (it is ignored)",
                        where, name, meant)


def env_name(field: FieldInfo) -> str:
    """The environment variable that feeds a settings field."""
    return str(field.validation_alias)


def allowed(field: FieldInfo) -> str:
    """A settings field's allowed values, in words (what an error about it says)."""
    return str((field.json_schema_extra or {}).get("allowed", ""))  # type: ignore[union-attr]


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


S = TypeVar("S", bound=Settings)


def settings_class(points: Iterable[EntryPoint] | None = None) -> type[Settings]:
    """Core's `Settings` with every backend's settings class of `points` (default: the installed entry
    points of `hybrid_serve.settings`) composed into one class: its fields are every variable of
    hybrid-serve. An entry point naming anything but a subclass of `Settings` is an error."""
    chosen = plugins.installed(SETTINGS_GROUP) if points is None else sorted(points, key=lambda ep: ep.name)
    classes = []
    for name, cls in plugins.load_all(chosen):
        if not (isinstance(cls, type) and issubclass(cls, Settings)):
            raise TypeError(f"entry point {name!r} of {SETTINGS_GROUP}: {cls!r}; allowed: a subclass of core.settings.Settings")
        classes.append(cls)
    return _composed(tuple(classes))


@lru_cache(maxsize=None)
def _composed(classes: tuple[type[Settings], ...]) -> type[Settings]:
    if not classes:
        return Settings
    if len(classes) == 1:
        return classes[0]
    return type("AllSettings", classes, {
        "__doc__": "Core's settings and those of " + ", ".join(c.__name__ for c in classes) + ".",
        "__module__": __name__,
    })


def _format_error(cls: type[Settings], error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ()
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    variable = str(loc[0])
    field = next((f for f in cls.model_fields.values() if env_name(f) == variable), None)
    shown = "<hidden>" if variable in SECRET_VARIABLES else repr(error.get("input"))
    return f"{variable}={shown}: {message.lower()}; allowed: {allowed(field) if field else ''}"


def _unknown(cls: type[Settings], overrides: Mapping[str, Any]) -> list[str]:
    known = {name for name in cls.model_fields} | {env_name(f) for f in cls.model_fields.values()}
    return sorted(key for key in overrides if key not in known)


def load_settings(env_file: str | Path | None = ".env", *, settings_cls: type[S] | None = None, **overrides: Any) -> S:
    """Load and validate the settings of `settings_cls` (default: `settings_class()`, core's and every
    installed backend's); raise `SettingsError` whose message names every bad variable and its range.
    An override that is no setting of the class is an error too, never silently ignored."""
    cls: type[Any] = settings_cls or settings_class()
    unknown = _unknown(cls, overrides)
    if unknown:
        raise SettingsError(f"invalid hybrid-serve settings:\n  - {', '.join(unknown)}: no such setting of {cls.__name__}; "
                            "allowed: a field or variable name of core's or an installed backend's settings "
                            f"(entry points of {SETTINGS_GROUP})")
    try:
        settings = cls(_env_file=env_file, **overrides)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_format_error(cls, e)}" for e in exc.errors(include_input=True, include_url=False))
        raise SettingsError(f"invalid hybrid-serve settings:\n{problems}") from None
    warn_misspelt(cls, env_file)
    return settings  # type: ignore[no-any-return]


def setting_sources(env_file: str | Path | None = ".env", *, settings_cls: type[Settings] | None = None,
                    **overrides: Any) -> dict[str, str]:
    """Where each effective setting came from, by variable name: argument, environment, .env, preset or default."""
    cls = settings_cls or settings_class()
    init = _StaticSource(cls, overrides)
    env = ByVariableOnly(EnvSettingsSource(cls, env_ignore_empty=True))
    dotenv = ByVariableOnly(DotEnvSettingsSource(cls, env_file=env_file, env_ignore_empty=True))
    preset = PresetSource(cls, (init, env, dotenv))
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("argument", overrides), ("environment", env()), (".env", dotenv()),
        (f"preset {preset.preset_name()}", preset()),
    ]
    result: dict[str, str] = {}
    for name, field in cls.model_fields.items():
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

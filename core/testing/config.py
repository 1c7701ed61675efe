"""What an endpoint of the testing kit is started with: a registry, settings and a time scale.

Why this module exists: a test names its experiments (a registry file, or entries written inline)
and the few settings it cares about; this module turns that into the validated `Settings` the
backend runs with — the registry written to a file, an event log the kit's assertions read, the
emulated clock's time scale — with errors that name the entry or the variable at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import SecretStr

from core.serving.registry import PACKAGE_PREFIX, Registry, experiment_entry
from core.settings import Settings, env_name, load_settings

#: A registry file, or entries: experiment id → its fields as in the file (`source`, `task`, ...).
RegistrySpec = str | Path | Mapping[str, Mapping[str, Any]] | None


@dataclass(frozen=True)
class EndpointConfig:
    """How to start an endpoint (the pytest marker `hybrid_serve(...)` takes the same arguments)."""

    #: A registry file, or inline entries; None: the shipped demo registry (`demo-embeddings`).
    registry: RegistrySpec = None
    #: Settings by field name (`base_warm_time`) or variable (`MODAL_BASE_WARM_TIME`); the environment
    #: fills the rest (a `.env` file is not read: a test does not depend on a developer's file).
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: Windows run this many times faster (HYBRID_TIME_SCALE): 450 turns a 900 s window into 2 s.
    time_scale: float = 1.0
    #: `ray` (the emulator of Modal's per-experiment containers) or `inprocess` (one process, no windows).
    backend: str = "ray"
    #: The Serve application's name on Ray (default: unique per endpoint).
    name: str | None = None
    #: Seconds the endpoint may take to come up (Ray's own start included).
    startup_timeout_s: float = 300.0


def registry_file(spec: RegistrySpec, folder: Path) -> Path | None:
    """The registry's file: `spec` itself, or inline entries validated and written into `folder`
    (relative local sources are resolved against the current directory first)."""
    if spec is None:
        return None
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser().resolve()
        Registry.load(path)  # a missing or malformed file fails here, naming it
        return path
    experiments = {}
    for experiment_id, fields in spec.items():
        experiment = experiment_entry(experiment_id, fields, Path.cwd())
        if experiment.is_local and not experiment.source.startswith(PACKAGE_PREFIX):
            experiment = experiment.model_copy(update={"source": str(experiment.local_path())})
        experiments[experiment_id] = experiment
    path = folder / "experiments.toml"
    path.write_text(Registry(experiments).to_toml(), encoding="utf-8")
    return path


def endpoint_settings(config: EndpointConfig, registry: Path | None, event_log: Path) -> Settings:
    """The settings the backend runs with: the test's, plus the registry, the time scale, an event log and
    the traffic recording, both in the test's folder."""
    overrides: dict[str, Any] = dict(config.settings)
    overrides.setdefault("time_scale", config.time_scale)
    if registry is not None:
        overrides["registry_path"] = registry
    if not ({"event_log", "HYBRID_EVENT_LOG"} & set(overrides)):
        overrides["event_log"] = event_log
    overrides["event_log_requests"] = True  # the expectations read the requests' lines, whatever the environment says
    if not ({"traffic_dir", "HYBRID_TRAFFIC_DIR"} & set(overrides)):  # the test's folder, not the user's home
        overrides["traffic_dir"] = event_log.parent / "traffic"
    return load_settings(env_file=None, **overrides)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a `hybrid-serve` process reads them from."""
    out: dict[str, str] = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[env_name(Settings.model_fields[name])] = str(value)
    return out

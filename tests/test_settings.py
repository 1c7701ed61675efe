"""Settings: defaults, .env, environment precedence, presets, and errors that name the variable."""

from __future__ import annotations

import pickle
import shutil
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import ValidationError

from backends.local_ray.settings import RaySettings, load_ray_settings, ray_settings
from backends.modal_backend.settings import ModalSettings
from core.settings import (PRESETS, SETTINGS_GROUP, Settings, SettingsError, env_name, load_settings, setting_sources,
                           settings_class)
from tests.conftest import REPO_ROOT

DEFAULTS = {
    "MODAL_BASE_WARM_TIME": ("base_warm_time", 900),
    "MODAL_EXTENSION_TIME": ("extension_time", 900),
    "MODAL_ACTIVITY_WINDOW": ("activity_window", 300),
    "MODAL_MAX_CONTAINERS": ("max_containers", 10),
}
# A valid non-default value for each variable.
OTHER = {"MODAL_BASE_WARM_TIME": 120, "MODAL_EXTENSION_TIME": 60, "MODAL_ACTIVITY_WINDOW": 45, "MODAL_MAX_CONTAINERS": 3}


@pytest.mark.parametrize("variable", DEFAULTS)
def test_default(variable: str) -> None:
    attr, default = DEFAULTS[variable]
    assert getattr(load_settings(), attr) == default
    assert setting_sources()[variable] == "default"


@pytest.mark.parametrize("variable", DEFAULTS)
def test_dotenv_value(variable: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"{variable}={OTHER[variable]}\n")
    attr, _ = DEFAULTS[variable]
    assert getattr(load_settings(), attr) == OTHER[variable]
    assert setting_sources()[variable] == ".env"


@pytest.mark.parametrize("variable", DEFAULTS)
def test_environment_beats_dotenv(variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"{variable}={OTHER[variable]}\n")
    monkeypatch.setenv(variable, str(OTHER[variable] + 1))
    attr, _ = DEFAULTS[variable]
    assert getattr(load_settings(), attr) == OTHER[variable] + 1
    assert setting_sources()[variable] == "environment"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_selects_its_values(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_PRESET", name)
    s = load_settings()
    assert (s.base_warm_time, s.extension_time, s.activity_window) == tuple(PRESETS[name].values())
    assert setting_sources()["MODAL_BASE_WARM_TIME"] == f"preset {name}"


def test_presets_match_the_configuration_guide() -> None:
    assert {k: tuple(v.values()) for k, v in PRESETS.items()} == {
        "conservative": (600, 600, 300),
        "balanced": (900, 900, 300),
        "performance": (1800, 1800, 600),
    }


def test_explicit_variable_overrides_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("HYBRID_PRESET=performance\nMODAL_ACTIVITY_WINDOW=42\n")
    monkeypatch.setenv("MODAL_EXTENSION_TIME", "10")
    s = load_settings()
    assert (s.base_warm_time, s.extension_time, s.activity_window) == (1800, 10, 42)
    sources = setting_sources()
    assert sources["MODAL_BASE_WARM_TIME"] == "preset performance"
    assert sources["MODAL_EXTENSION_TIME"] == "environment"
    assert sources["MODAL_ACTIVITY_WINDOW"] == ".env"


def test_unknown_preset_names_the_variable_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_PRESET", "turbo")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "HYBRID_PRESET='turbo'" in str(err.value)
    assert "conservative, balanced, performance" in str(err.value)


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("MODAL_BASE_WARM_TIME", "abc", "2..3600"),
        ("MODAL_BASE_WARM_TIME", "90.5", "2..3600"),
        ("MODAL_BASE_WARM_TIME", "-5", "2..3600"),
        ("MODAL_BASE_WARM_TIME", "1", "2..3600"),
        ("MODAL_BASE_WARM_TIME", "3601", "2..3600"),
        ("MODAL_EXTENSION_TIME", "-1", "≥ 0"),
        ("MODAL_EXTENSION_TIME", "ten", "≥ 0"),
        ("MODAL_ACTIVITY_WINDOW", "0", "> 0"),
        ("MODAL_ACTIVITY_WINDOW", "-300", "> 0"),
        ("MODAL_ACTIVITY_WINDOW", "5m", "> 0"),
        ("MODAL_MAX_CONTAINERS", "0", "≥ 1"),
        ("MODAL_MAX_CONTAINERS", "2.5", "≥ 1"),
    ],
)
def test_invalid_value_names_variable_value_and_range(
    variable: str, value: str, allowed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert f"{variable}='{value}'" in message
    assert allowed in message


def test_window_sum_over_modal_maximum_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_BASE_WARM_TIME", "1800")
    monkeypatch.setenv("MODAL_EXTENSION_TIME", "1801")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "MODAL_BASE_WARM_TIME + MODAL_EXTENSION_TIME = 1800 + 1801 = 3601" in message
    assert "≤ 3600" in message


def test_window_bounds_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_BASE_WARM_TIME", "2")
    monkeypatch.setenv("MODAL_EXTENSION_TIME", "3598")
    s = load_settings()
    assert (s.idle_window_s, s.active_window_s) == (2, 3600)


def test_all_errors_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_BASE_WARM_TIME", "x")
    monkeypatch.setenv("MODAL_MAX_CONTAINERS", "0")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "MODAL_BASE_WARM_TIME" in str(err.value) and "MODAL_MAX_CONTAINERS" in str(err.value)


@pytest.mark.parametrize("only", ["MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"])
def test_exactly_one_token_is_an_error(only: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(only, "ak-1234567890")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert f"only {only} is set" in str(err.value)
    assert "MODAL_TOKEN_ID / MODAL_TOKEN_SECRET" in str(err.value)


def test_empty_token_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "")
    assert load_settings().modal_token_id is None


def declared_settings() -> list[EntryPoint]:
    """The `hybrid_serve.settings` entry points as pyproject.toml declares them (whatever is installed)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [EntryPoint(name, value, SETTINGS_GROUP) for name, value in project["entry-points"][SETTINGS_GROUP].items()]


def test_every_backend_declares_its_settings_through_the_entry_point() -> None:
    assert {ep.name: ep.value for ep in declared_settings()} == {
        "ray": "backends.local_ray.settings:RaySettings", "modal": "backends.modal_backend.settings:ModalSettings"}
    cls = settings_class(declared_settings())
    assert issubclass(cls, RaySettings) and issubclass(cls, ModalSettings)
    assert settings_class([]) is Settings and settings_class(declared_settings()[:1]) in (RaySettings, ModalSettings)


def test_core_settings_hold_no_backend_key() -> None:
    core = {env_name(f) for f in Settings.model_fields.values()}
    for backend in (RaySettings, ModalSettings):
        own = {env_name(f) for name, f in backend.model_fields.items() if name not in Settings.model_fields}
        assert own and not own & core
    assert not {"HYBRID_REPLICA_CPUS", "HYBRID_MAX_REPLICAS", "MODAL_GPU", "HYBRID_RECONCILE_INTERVAL_S"} & core


def test_an_entry_point_that_is_no_settings_class_is_refused() -> None:
    with pytest.raises(TypeError, match="entry point 'odd' of hybrid_serve.settings: .*allowed: a subclass of core.settings.Settings"):
        settings_class([EntryPoint("odd", "core.settings:load_settings", SETTINGS_GROUP)])


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("HYBRID_REPLICA_CPUS", "0", "number > 0: CPUs Ray reserves for each replica"),
    ("HYBRID_MAX_REPLICAS", "-1", "integer ≥ 0: replicas across all experiments"),
    ("HYBRID_IDLE_POOL_TTL_S", "soon", "seconds ≥ 0 a pool stays deployed"),
    ("HYBRID_HANDLE_IDLE_S", "-1", "seconds ≥ 0 the ingress keeps its handle"),
    ("HYBRID_RECONCILE_INTERVAL_S", "5", "seconds 10..3600"),
    ("MODAL_APP_NAME", "no spaces", "a Modal app name ([A-Za-z0-9_.-], ≤ 64)"),
])
def test_a_bad_backend_key_fails_at_load_naming_the_variable_and_range(
        variable: str, value: str, allowed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        load_settings(env_file=None, settings_cls=settings_class(declared_settings()))
    assert f"{variable}='{value}'" in str(err.value) and allowed in str(err.value)


def test_a_backend_rule_across_its_keys_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_GPU_SNAPSHOT", "true")
    with pytest.raises(SettingsError, match="HYBRID_GPU_SNAPSHOT=true needs HYBRID_MEMORY_SNAPSHOT=true"):
        load_settings(env_file=None, settings_cls=settings_class(declared_settings()))


def test_an_override_that_is_no_setting_is_an_error_not_ignored() -> None:
    with pytest.raises(SettingsError, match="replica_cpus: no such setting of Settings"):
        load_settings(env_file=None, settings_cls=Settings, replica_cpus=0.5)
    assert load_settings(env_file=None, settings_cls=RaySettings, replica_cpus=0.5).replica_cpus == 0.5


def test_env_template_copied_to_dotenv_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRID_TRAFFIC_DIR")  # the suite's own (tests/conftest.py): here, the default
    shutil.copy(REPO_ROOT / "env_template.txt", tmp_path / ".env")
    cls = settings_class(declared_settings())
    assert load_settings(settings_cls=cls).model_dump() == cls.model_construct(
        **{f: fi.default for f, fi in cls.model_fields.items()}).model_dump()


def test_env_template_lists_exactly_the_variables_of_core_and_every_backend() -> None:
    template = [line.split("=", 1)[0] for line in (REPO_ROOT / "env_template.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    assert sorted(template) == sorted(env_name(f) for f in settings_class(declared_settings()).model_fields.values())


def test_the_ray_settings_cross_into_ray_validated_and_as_their_own_class() -> None:
    loaded = load_settings(env_file=None, settings_cls=settings_class(declared_settings()), replica_cpus=0.5, modal_gpu="L4")
    sent = ray_settings(loaded, max_replicas=3)
    assert type(sent) is RaySettings and (sent.replica_cpus, sent.max_replicas) == (0.5, 3)
    assert pickle.loads(pickle.dumps(sent)) == sent
    with pytest.raises(ValidationError, match="max_replicas"):
        ray_settings(loaded, max_replicas=-1)
    with pytest.raises(SettingsError, match="without its keys .*HYBRID_REPLICA_CPUS"):
        ray_settings(load_settings(env_file=None, settings_cls=Settings))


def test_replicas_take_what_a_modal_container_takes_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_CONCURRENT_INPUTS", "12")
    assert load_ray_settings(env_file=None).target_ongoing == 12
    monkeypatch.setenv("HYBRID_REPLICA_TARGET_ONGOING", "3")
    assert load_ray_settings(env_file=None).target_ongoing == 3


# --- only the documented names set a value --------------------------------------------------------------
def test_a_variable_named_after_a_field_sets_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`MAX_CONTAINERS=3 BASE_WARM_TIME=60` planned base 60 s and max 3, and a secret key named
    `API_TOKEN` would have become the bearer token: only the documented variables set a value."""
    monkeypatch.setenv("MAX_CONTAINERS", "3")
    monkeypatch.setenv("BASE_WARM_TIME", "60")
    monkeypatch.setenv("API_TOKEN", "not-the-token")
    (tmp_path / ".env").write_text("EXTENSION_TIME=5\nmax_containers=4\n")
    settings = load_settings(env_file=tmp_path / ".env")
    assert (settings.max_containers, settings.base_warm_time, settings.extension_time) == (10, 900, 900)
    assert settings.api_token is None
    assert setting_sources(env_file=tmp_path / ".env")["MODAL_MAX_CONTAINERS"] == "default"
    assert load_settings(env_file=None, max_containers=3).max_containers == 3  # code may still pass field names


def test_a_misspelt_variable_is_named_with_the_one_it_meant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import core.settings

    monkeypatch.setattr(core.settings, "_warned", set())
    monkeypatch.setenv("MODAL_MAX_CONTAINER", "3")
    monkeypatch.setenv("HYBRID_BASE_WARM_TIME", "60")  # the right name under the other prefix
    for name in ("MODAL_TASK_ID", "MODAL_ENVIRONMENT", "MODAL_PROFILE", "MODAL_SERVER_URL", "HYBRID_DEPLOYMENT"):
        monkeypatch.setenv(name, "x")  # Modal's own variables and hybrid-serve's internal ones: no warning
    monkeypatch.setenv("hybrid_max_inputs", "7")  # a documented name in another case: it applies, no warning
    (tmp_path / ".env").write_text("HYBRID_MAX_QEUE=5\n")
    caplog.set_level("WARNING", logger="hybrid_serve.settings")
    settings = load_settings(env_file=tmp_path / ".env")
    load_settings(env_file=tmp_path / ".env")  # once per process, however often the settings are loaded
    assert settings.max_containers == 10 and settings.base_warm_time == 900 and settings.max_queue != 5
    assert settings.max_inputs == 7
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == 3, warnings
    assert any("MODAL_MAX_CONTAINER," in w and "did you mean MODAL_MAX_CONTAINERS?" in w for w in warnings)
    assert any("HYBRID_BASE_WARM_TIME" in w and "did you mean MODAL_BASE_WARM_TIME?" in w for w in warnings)
    assert any(w.startswith(str(tmp_path / ".env")) and "did you mean HYBRID_MAX_QUEUE?" in w for w in warnings)


@pytest.mark.parametrize(("value", "fragment"), [("fixed:1", "windows in 2..3600"), ("fixed:600:900", "no longer than"),
                                                 ("fixed:7200", "windows in 2..3600"), ("fixed", "should match pattern"),
                                                 ("adaptive:80", "should match pattern")])
def test_a_fixed_policy_for_the_servers_is_refused_outside_modals_windows(monkeypatch: pytest.MonkeyPatch, value: str,
                                                                          fragment: str) -> None:
    monkeypatch.setenv("HYBRID_POLICY", value)
    with pytest.raises(SettingsError, match="HYBRID_POLICY") as error:
        load_settings(env_file=None)
    assert fragment in str(error.value) and "fixed:SECONDS[:BURST_SECONDS]" in str(error.value)


def test_a_fixed_policy_with_a_burst_window_is_what_the_servers_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.keepwarm.controller import WindowController
    from core.keepwarm.policies import retention_s

    monkeypatch.setenv("HYBRID_POLICY", "fixed:3600:60")
    settings = load_settings(env_file=None)
    controller = WindowController.in_memory(settings)
    plan = controller.arrived("e")
    assert (plan.window_s, plan.decision.burst_window_s, plan.scaledown_window_s, plan.min_containers) == (3600, 60, 60, 1)
    assert retention_s(settings, controller.policy) >= 3600 + settings.activity_window  # remembered as long as it is kept

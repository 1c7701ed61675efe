"""Settings: defaults, .env, environment precedence, presets, and errors that name the variable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.settings import PRESETS, Settings, SettingsError, env_name, load_settings, setting_sources
from tests.conftest import REPO_ROOT, make_settings

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


def test_env_template_copied_to_dotenv_gives_the_defaults(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "env_template.txt", tmp_path / ".env")
    assert load_settings() == Settings.model_construct(**{f: fi.default for f, fi in Settings.model_fields.items()})


def test_env_template_lists_every_variable() -> None:
    template = (REPO_ROOT / "env_template.txt").read_text()
    for field in Settings.model_fields.values():
        assert f"\n{env_name(field)}=" in template, env_name(field)


def test_replicas_take_what_a_modal_container_takes_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODAL_CONCURRENT_INPUTS", "12")
    assert make_settings().target_ongoing == 12
    monkeypatch.setenv("HYBRID_REPLICA_TARGET_ONGOING", "3")
    assert make_settings().target_ongoing == 3

"""The `hybrid-serve config` command: mode line, every setting with its source, implied windows, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.cli import app


def test_config_prints_mode_settings_sources_and_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("HYBRID_PRESET=conservative\nMODAL_MAX_CONTAINERS=4\n")
    monkeypatch.setenv("MODAL_ACTIVITY_WINDOW", "120")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "🔧 Development mode: Using web authentication"
    rows = {cells[0]: cells[1:] for line in lines[2:] if len(cells := re.split(r"\s{2,}", line.strip())) >= 3}
    assert rows["MODAL_BASE_WARM_TIME"] == ["600", "preset conservative", "integer seconds in 2..3600"]
    assert rows["MODAL_MAX_CONTAINERS"][:2] == ["4", ".env"] and rows["MODAL_MAX_CONTAINERS"][2].startswith("integer ≥ 1")
    assert rows["MODAL_ACTIVITY_WINDOW"] == ["120", "environment", "integer seconds > 0"]
    assert rows["MODAL_TOKEN_ID"][:2] == ["unset", "default"]
    assert "(idle): 600 s" in result.output
    assert "in the last 120 s (active): 1200 s" in result.output


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("MODAL_BASE_WARM_TIME", "1", "2..3600"),  # a core key
    ("HYBRID_REPLICA_CPUS", "0", "number > 0: CPUs Ray reserves"),  # a key the Ray backend declares
])
def test_console_script_exits_2_naming_the_variable_and_its_range(tmp_path: Path, variable: str, value: str,
                                                                  allowed: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    env[variable] = value
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.run([str(exe), "config"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{variable}={value!r}" in proc.stderr and allowed in proc.stderr
    assert proc.stdout == ""


def test_console_script_exits_0_on_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.run([str(exe), "config"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("🔧 Development mode: Using web authentication\n")


def test_config_lists_every_backend_key_with_its_value_source_and_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_MAX_REPLICAS", "7")
    monkeypatch.setenv("MODAL_GPU", "L4")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells[1:] for line in result.output.splitlines()
            if len(cells := re.split(r"\s{2,}", line.strip())) >= 3}
    assert rows["HYBRID_MAX_REPLICAS"][:2] == ["7", "environment"]  # the Ray backend's
    assert rows["HYBRID_MAX_REPLICAS"][2].startswith("integer ≥ 0")
    assert rows["MODAL_GPU"][:2] == ["L4", "environment"]  # the Modal backend's
    assert rows["HYBRID_RECONCILE_INTERVAL_S"] == ["60.0", "default", RECONCILE_RANGE]
    assert set(template_variables()) <= set(rows)  # every variable of env_template.txt


RECONCILE_RANGE = ("seconds 10..3600: the window reconciler runs at least this often (pre-warms, re-application "
                   "after a deploy)")


def template_variables() -> list[str]:
    from tests.conftest import REPO_ROOT

    return [line.split("=", 1)[0] for line in (REPO_ROOT / "env_template.txt").read_text().splitlines()
            if line and not line.startswith("#")]


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"hybrid-serve {version('hybrid-serve')}"


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    click_group = typer.main.get_command(app) if not path else group
    found = [path]
    for name, command in getattr(click_group, "commands", {}).items():
        found += _commands(command, path + (name,)) if hasattr(command, "commands") else [path + (name,)]
    return found


def test_every_commands_help_reads_at_80_columns() -> None:
    """Plain help that wraps at the terminal's width: no line past 80 columns, no boxes squeezing the
    descriptions into a narrow column."""
    commands = _commands(app)
    assert ("simulate",) in commands and ("experiments", "add") in commands
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"], terminal_width=80, env={"COLUMNS": "80"})
        assert result.exit_code == 0, (command, result.output)
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= 80, (command, [line for line in lines if len(line) > 80])
        assert "│" not in result.output, command


def test_a_registry_file_not_created_yet_lists_empty_starts_empty_and_says_so(
        tmp_path: Path, tiny_models: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """HYBRID_REGISTRY naming a file that is not there yet: `list` says it is empty (not silence), `serve`
    creates it empty and says the demo is not in it, the first `add` into a new file says the same."""
    from core.cli import _create_missing_registry
    from core.serving.registry import Registry

    registry = tmp_path / "experiments.toml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRID_REGISTRY", str(registry))
    listed = CliRunner().invoke(app, ["experiments", "list"])
    assert listed.exit_code == 0 and "does not exist yet" in listed.output and not registry.exists()
    added = CliRunner().invoke(app, ["experiments", "add", "mine", "--source", str(tiny_models["feature-extraction"]),
                                     "--task", "feature-extraction"])
    assert added.exit_code == 0 and "created" in added.output and "demo-embeddings" in added.output, added.output
    assert "created" not in CliRunner().invoke(app, ["experiments", "add", "two", "--source", "org/m", "--task",
                                                     "feature-extraction"]).output  # said once
    fresh = tmp_path / "new.toml"
    _create_missing_registry(fresh)  # what `serve` does first
    assert list(Registry.load(fresh)) == [] and "created it empty" in capsys.readouterr().out
    _create_missing_registry(registry)  # an existing file is left as it is
    assert [e.id for e in Registry.load(registry)] == ["mine", "two"] and capsys.readouterr().out == ""
    dangling = tmp_path / "link.toml"
    dangling.symlink_to(tmp_path / "elsewhere" / "r.toml")
    _create_missing_registry(dangling)  # never written through a link
    assert not (tmp_path / "elsewhere").exists() and capsys.readouterr().out == ""
    import core.cli

    def read_only(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(core.cli, "open", read_only, raising=False)  # a folder it may not write in
    with pytest.raises(typer.Exit) as refused:  # said, exit 2, no traceback
        _create_missing_registry(tmp_path / "locked.toml")
    assert refused.value.exit_code == 2 and "cannot be created there: Permission denied" in capsys.readouterr().err

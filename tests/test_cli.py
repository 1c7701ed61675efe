"""The `hybrid-serve config` command: mode line, every setting with its source, implied windows, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
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

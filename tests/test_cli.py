"""The `hybrid-serve config` command: mode line, every setting with its source, implied windows, exit codes."""

from __future__ import annotations

import os
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
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:9]}
    assert rows["MODAL_BASE_WARM_TIME"] == ["600", "preset", "conservative"]
    assert rows["MODAL_MAX_CONTAINERS"] == ["4", ".env"]
    assert rows["MODAL_ACTIVITY_WINDOW"] == ["120", "environment"]
    assert rows["MODAL_TOKEN_ID"] == ["unset", "default"]
    assert "(idle): 600 s" in result.output
    assert "in the last 120 s (active): 1200 s" in result.output


def test_console_script_exits_2_with_the_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    env["MODAL_BASE_WARM_TIME"] = "1"
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.run([str(exe), "config"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "MODAL_BASE_WARM_TIME='1'" in proc.stderr and "2..3600" in proc.stderr
    assert proc.stdout == ""


def test_console_script_exits_0_on_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.run([str(exe), "config"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("🔧 Development mode: Using web authentication\n")

"""The house's rules, checked: one direction of imports between core's rooms, core never imports a
backend, and the serving path (what the Modal image runs) needs neither the simulator nor matplotlib."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: Which rooms each room may import (besides the top-level modules settings, auth, metrics, events).
ALLOWED = {
    "keepwarm": {"keepwarm"},
    "serving": {"serving", "keepwarm"},
    "http": {"http", "serving", "keepwarm"},
    "sim": {"sim", "keepwarm"},
    "testing": {"testing", "serving"},  # the testing kit reaches backends through entry points only
}
TOP = {"settings", "auth", "metrics", "events", "cli"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_rooms_import_only_in_one_direction(room: str) -> None:
    for path in sorted((REPO_ROOT / "core" / room).glob("*.py")):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "backends":
                pytest.fail(f"{path.name} imports a backend: {name}")
            if parts[0] != "core" or len(parts) < 2:
                continue
            target = parts[1]
            assert target in ALLOWED[room] or (target in TOP and target != "cli"), f"core/{room}/{path.name} imports {name}"


def test_top_level_modules_import_no_room_but_the_cli() -> None:
    for name in TOP - {"cli"}:
        rooms = {n.split(".")[1] for n in imports_of(REPO_ROOT / "core" / f"{name}.py") if n.startswith("core.")}
        assert not rooms & set(ALLOWED), f"core/{name}.py imports {rooms & set(ALLOWED)}"


def test_the_serving_path_loads_neither_the_simulator_nor_matplotlib() -> None:
    probe = ("import json, sys\n"
             "import core.http.app, core.serving.engine, core.serving.worker, backends.local_ray.app, backends.modal_backend.ingress\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('core.sim', 'matplotlib')))))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_an_ingress_forwards_requests_without_the_model_stack() -> None:
    probe = ("import json, sys\n"
             "import core.http.app, core.serving.remote\n"
             "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

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

#: Which rooms each room may import (besides the top-level modules settings, auth, metrics, events, prices).
ALLOWED = {
    "keepwarm": {"keepwarm"},
    "serving": {"serving", "keepwarm"},
    "http": {"http", "serving", "keepwarm"},
    "sim": {"sim", "keepwarm"},
    "testing": {"testing", "serving"},  # the testing kit reaches backends through entry points only
    "bench": {"bench", "serving", "testing"},  # `hybrid-serve bench`: the registry, and `served` to start the emulator
}
TOP = {"settings", "auth", "metrics", "events", "percentile", "plugins", "prices", "recording", "cli", "cli_common"}


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
            assert target in ALLOWED[room] or (target in TOP and not target.startswith("cli")), f"core/{room}/{path.name} imports {name}"


def test_top_level_modules_import_no_room_but_the_cli() -> None:
    for name in TOP - {"cli", "cli_common"}:
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
             "import core.http.app, core.serving.remote, backends.local_ray.app, backends.local_ray.ingress, "
             "backends.modal_backend.ingress\n"
             "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def core_modules() -> dict[str, Path]:
    """`core.x.y -> path` of every module of core (a package is its `__init__.py`)."""
    out = {}
    for path in sorted((REPO_ROOT / "core").rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The core modules `module` imports anywhere in its file (at the top or inside a function): `import a.b`,
    `from a import b` (b a module or a name of a), relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known and name != module}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def core_import_graph() -> dict[str, set[str]]:
    modules = core_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import core.b\n")
    (tmp_path / "b.py").write_text("def f():\n    from core.a import x\n")
    modules = {"core.a": tmp_path / "a.py", "core.b": tmp_path / "b.py"}
    graph = {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}
    assert import_cycles(graph) == [["core.a", "core.b"]]


def test_core_modules_import_each_other_without_a_cycle() -> None:
    graph = core_import_graph()
    assert "core.experiments_cli" in graph["core.cli"]  # the graph sees real imports
    assert import_cycles(graph) == []


#: A string naming a backend's module or file: `backends.modal_backend.registry_store:…`, `backends/local_ray/…`.
BACKEND_NAME = ("backends.", "backends/")


def backend_strings(path: Path) -> list[str]:
    """The string literals of a file that name a backend module (docstrings, which describe, excepted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        for body in [node.body] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    }
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and (node.value.startswith(BACKEND_NAME[0]) or BACKEND_NAME[1] in node.value)]


def test_the_backend_string_finder_sees_a_module_loaded_by_name(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text('"""Describes backends/local_ray."""\nTARGET = "backends.modal_backend.registry_store:modal_registry"\n'
                    'FILE = "see backends/local_ray/app.py"\n')
    assert backend_strings(path) == ["backends.modal_backend.registry_store:modal_registry", "see backends/local_ray/app.py"]


def test_core_names_no_backend_module_in_a_string() -> None:
    found = {str(path.relative_to(REPO_ROOT)): hits for path in sorted((REPO_ROOT / "core").rglob("*.py"))
             if (hits := backend_strings(path))}
    assert found == {}


def test_the_architecture_doc_names_every_module_of_core_and_the_backends() -> None:
    """docs/architecture.md is the newcomer's map: a module missing from it is a room nobody was shown."""
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    modules = [p.relative_to(REPO_ROOT).as_posix() for folder in ("core", "backends")
               for p in sorted((REPO_ROOT / folder).rglob("*.py")) if p.name != "__init__.py"]
    assert len(modules) > 50
    missing = [m for m in modules if f"`{m}`" not in doc]
    assert not missing, f"modules not named in docs/architecture.md: {missing}"


#: The longest a class of core/ or the backends may be, in lines (`class` to its last line): under 120.
MAX_CLASS_LINES = 119


def long_classes(path: Path, limit: int) -> list[tuple[str, int]]:
    """Every class of a file (nested ones too) longer than `limit` lines, with its length."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.name, length) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > limit]


def test_the_class_length_finder_sees_a_long_nested_class(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text("class Short:\n    pass\n\n\nclass Outer:\n    class Inner:\n        a = 1\n        b = 2\n")
    assert long_classes(path, 2) == [("Outer", 4), ("Inner", 3)]


def test_every_class_in_core_and_backends_is_under_120_lines() -> None:
    """A class that long holds several jobs: split it into collaborators, one job each."""
    found = [f"{path.relative_to(REPO_ROOT).as_posix()}: {name} ({length} lines)"
             for folder in ("core", "backends") for path in sorted((REPO_ROOT / folder).rglob("*.py"))
             for name, length in long_classes(path, MAX_CLASS_LINES)]
    assert not found, f"classes over {MAX_CLASS_LINES} lines: {found}"

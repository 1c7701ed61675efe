"""How the suite is shared between its xdist workers (tests/scheduling.py): every session-Ray file in
one unit of work, every other file a unit of its own."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.scheduling import SESSION_RAY, marked_session_ray, unit_of


def test_a_file_is_a_session_ray_file_by_its_module_level_mark_only(tmp_path: Path) -> None:
    cases = {"ray.py": "import pytest\npytestmark = pytest.mark.session_ray  # on the session's Ray\n",
             "kit.py": 'import pytest\npytestmark = pytest.mark.hybrid_serve(\n    registry="x")\n',
             "said.py": '"""Not like `pytestmark = pytest.mark.session_ray` in a docstring."""\n',
             "long.py": "import pytest\npytestmark = pytest.mark.long\n",
             "other_mark.py": "import pytest\npytestmark = pytest.mark.session_ray_like\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert {name for name in cases if marked_session_ray(tmp_path / name)} == {"ray.py", "kit.py"}
    assert not marked_session_ray(tmp_path / "missing.py")


def test_the_session_ray_files_make_one_unit_and_every_other_file_its_own() -> None:
    units = {nodeid: unit_of(REPO_ROOT, nodeid) for nodeid in (
        "tests/backends/local_ray/test_local_ray.py::test_first_request_is_a_cold_start_and_the_second_is_warm",
        "tests/testing/test_kit.py::test_x[ray]",
        "tests/testing/examples/test_my_experiment.py::test_y",
        "tests/keepwarm/test_ledger.py::test_z",
        "tests/backends/local_ray/test_ray_cluster.py::test_a_shared_two_node_cluster")}
    assert list(units.values()) == [SESSION_RAY, SESSION_RAY, SESSION_RAY, "tests/keepwarm/test_ledger.py",
                                    "tests/backends/local_ray/test_ray_cluster.py"]


def test_a_test_marked_for_the_session_ray_in_a_way_the_scheduler_cannot_read_stops_the_run(tmp_path: Path) -> None:
    """xdist's controller reads the module-level mark from the source; each worker checks that pytest's
    own marks agree. A session-Ray mark on one test only (the scheduler would send its file to the other
    worker, which would start a second Ray instance) stops the run naming the file; agreeing marks pass
    and put the session-Ray tests first."""
    import pytest

    from tests.conftest import pytest_collection_modifyitems

    (tmp_path / "test_marked.py").write_text("import pytest\npytestmark = pytest.mark.session_ray\n")
    (tmp_path / "test_plain.py").write_text("import pytest\n")

    class Item:
        def __init__(self, file: str, *marks: str):
            self.path, self.nodeid, self.marks = tmp_path / file, f"{file}::test_x", set(marks)

        def get_closest_marker(self, name: str) -> object | None:
            return name if name in self.marks else None

    plain, marked = Item("test_plain.py"), Item("test_marked.py", "session_ray")
    items = [plain, marked]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert items == [marked, plain]
    with pytest.raises(pytest.UsageError, match="test_plain.py::test_x: mark a module"):
        pytest_collection_modifyitems([Item("test_plain.py", "session_ray")])  # type: ignore[list-item]
    with pytest.raises(pytest.UsageError, match="test_marked.py::test_x"):
        pytest_collection_modifyitems([Item("test_marked.py")])  # type: ignore[list-item]

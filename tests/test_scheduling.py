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

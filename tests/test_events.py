"""The event log's names: one enum, written as its plain string, and nothing else is accepted."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest

from core.events import SCALING_EVENTS, EventLog, EventName, export_requests, read_events
from tests.conftest import REPO_ROOT


def written_names() -> list[tuple[str, int, ast.expr]]:
    """Every event name passed to an `….events.write(experiment, event, …)` call in core/ and backends/."""
    found = []
    for path in [*(REPO_ROOT / "core").rglob("*.py"), *(REPO_ROOT / "backends").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write"
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "events"):
                found.append((str(path.relative_to(REPO_ROOT)), node.lineno, node.args[1]))
    return found


def test_every_name_written_in_the_code_is_a_member() -> None:
    calls = written_names()
    assert len(calls) >= 3  # the request path's two, the Ray autoscaling policy's one
    names_in_variables = 0
    for where, line, arg in calls:
        if isinstance(arg, ast.Name):  # a variable: each of its assignments is checked below
            names_in_variables += 1
            continue
        assert isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "EventName", \
            f"{where}:{line} writes an event name that is not an EventName member"
        assert arg.attr in EventName.__members__, f"{where}:{line}: EventName.{arg.attr} does not exist"
    scaling = (REPO_ROOT / "backends/local_ray/scaling.py").read_text(encoding="utf-8")
    assert names_in_variables == 1 and '"scale_' not in scaling and '"prewarm"' not in scaling


def test_each_name_is_written_as_its_plain_string_and_read_back_as_the_member(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    for name in EventName:
        log.write("a", name, 60.0, "why", replicas=1)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == [
        "request", "cold_start", "prewarm", "scale_up", "scale_down", "scale_to_zero", "registry"]
    events = read_events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == list(EventName) and all(isinstance(e["event"], EventName) for e in events)
    assert EventName.REQUEST not in SCALING_EVENTS and EventName.REGISTRY not in SCALING_EVENTS
    assert len(SCALING_EVENTS) == len(EventName) - 2


@pytest.mark.parametrize("path", [None, "events.jsonl"])
def test_an_unknown_name_is_refused_where_it_is_written(tmp_path: Path, path: str | None) -> None:
    log = EventLog(None if path is None else tmp_path / path)
    with pytest.raises(ValueError, match=r"unknown event name 'scale_too_zero': one of request, cold_start, .*scale_to_zero"):
        log.write("a", "scale_too_zero", 60.0)  # type: ignore[arg-type]
    assert not (tmp_path / "events.jsonl").exists()


def test_a_log_line_with_an_unknown_name_is_refused_naming_the_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    EventLog(events).write("a", EventName.REQUEST)
    with events.open("a") as fh:
        fh.write(json.dumps({"time": 1.0, "experiment": "a", "event": "exploded"}) + "\n")
    with pytest.raises(ValueError, match=r"events.jsonl:2: unknown event name 'exploded'"):
        read_events(events)


def test_only_requests_are_exported_for_the_simulator(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    log = EventLog(events)
    for name in (EventName.REQUEST, EventName.COLD_START, EventName.REQUEST, EventName.SCALE_TO_ZERO):
        log.write("a", name)
    out = io.StringIO()
    assert export_requests(events, out) == 2
    assert out.getvalue().splitlines()[0] == "timestamp,experiment_id" and len(out.getvalue().splitlines()) == 3

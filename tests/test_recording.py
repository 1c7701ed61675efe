"""The traffic recording's store: segments rotate at a size and an age, the directory stays within its
size budget and retention, writers sharing a directory never lose each other's lines or their own,
and a line cut short by a killed writer is skipped."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.recording import MIN_SEGMENT_BYTES, Limits, Recording, recording_for
from tests.conftest import make_settings


class Clock:
    """Time that moves only when a test moves it (from now: files' real mtimes meet it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def record(n: int, at: float, pad: int = 0) -> dict:
    return {"time": at, "experiment": f"e{n % 3}", "event": "request", "n": n, "pad": "x" * pad}


def test_records_come_back_in_order_and_since_filters(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recording(tmp_path, Limits(10**7, 86400), clock)
    for n in range(50):
        rec.append(record(n, clock.now - 50 + n))  # a request is recorded when it ends: its arrival is past
    assert [r["n"] for r in rec.read()] == list(range(50))
    assert [r["n"] for r in rec.read(since=clock.now - 5)] == [45, 46, 47, 48, 49]


def test_segments_rotate_at_an_eighth_of_the_budget_and_the_oldest_go_first(tmp_path: Path) -> None:
    clock = Clock()
    limits = Limits(8 * MIN_SEGMENT_BYTES, 30 * 86400)
    rec = Recording(tmp_path, limits, clock)
    line = len(json.dumps(record(0, clock.now, pad=1000), separators=(",", ":"))) + 1
    total = 0
    for n in range(600):  # about 9.4 budgets' worth of segments
        clock.now += 1
        rec.append(record(n, clock.now, pad=1000))
        total += line
    sizes = [p.stat().st_size for p in rec.segments()]
    assert max(sizes) <= limits.segment_bytes
    # the budget holds, give or take the open segment that rides on top of it
    assert sum(sizes) <= limits.max_bytes + limits.segment_bytes
    kept = [r["n"] for r in rec.read()]
    assert kept == list(range(kept[0], 600)), "the newest records are kept, in order, with no hole"
    assert kept[0] > 0 and len(kept) * line >= limits.max_bytes - limits.segment_bytes


def test_retention_drops_old_segments_and_an_hour_old_segment_is_closed(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recording(tmp_path, Limits(10**8, 2 * 86400), clock)
    rec.append(record(0, clock.now))
    first = rec.segments()[0]
    os.utime(first, (clock.now, clock.now))
    clock.now += 3 * 86400  # past the retention; the open segment is also over an hour old: rotated
    rec.append(record(1, clock.now))
    assert first not in rec.segments()
    assert [r["n"] for r in rec.read()] == [1]


def test_what_is_recorded_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "new" / "traffic", Limits(10**7, 86400))
    rec.append(record(0, 1.0))
    assert (tmp_path / "new" / "traffic").stat().st_mode & 0o777 == 0o700
    assert rec.segments()[0].stat().st_mode & 0o777 == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)  # a folder made on purpose keeps its permissions
    Recording(shared, Limits(10**7, 86400)).append(record(1, 1.0))
    assert shared.stat().st_mode & 0o777 == 0o750


def test_two_writers_share_a_directory_and_one_pruned_by_the_other_starts_a_new_segment(tmp_path: Path) -> None:
    clock = Clock()
    a = Recording(tmp_path, Limits(8 * MIN_SEGMENT_BYTES, 86400), clock)
    b = Recording(tmp_path, Limits(8 * MIN_SEGMENT_BYTES, 86400), clock)
    a.append(record(0, clock.now))
    b.append(record(1, clock.now))
    assert len(a.segments()) == 2
    for segment in a.segments():  # an outside prune (the other writer's, over budget) removes both
        segment.unlink()
    a.append(record(2, clock.now))
    b.append(record(3, clock.now))
    assert sorted(r["n"] for r in a.read()) == [2, 3], "neither writer kept writing into a deleted file"


def test_a_line_cut_short_by_a_killed_writer_is_skipped(tmp_path: Path) -> None:
    rec = Recording(tmp_path, Limits(10**7, 86400))
    rec.append(record(0, 1.0))
    with open(rec.segments()[0], "a") as fh:
        fh.write('{"time": 2.0, "experi')
    rec.close()
    rec.append(record(1, 3.0))
    assert [r["n"] for r in rec.read()] == [0, 1]


def test_an_unreadable_segment_or_a_malformed_record_costs_only_itself(tmp_path: Path) -> None:
    from core.serving.traffic import Traffic

    rec = Recording(tmp_path, Limits(10**7, 86400))
    now = time.time()
    rec.append(record(0, now - 30))
    rec.close()
    (tmp_path / "00000000T000000000000-dir.jsonl").mkdir()  # a segment name that cannot be read
    (tmp_path / "00000000T000000000001-bad.jsonl").write_text(
        '[1, 2]\n{"time": "yesterday", "event": "request", "experiment": "e1"}\n'
        '{"time": %f, "event": "request"}\n{"time": %f, "event": "request", "experiment": 7}\n' % (now - 20, now - 20))
    rec.append(record(1, now - 10))
    assert [r.get("n") for r in rec.read()] == [None, None, 0, 1]  # the two lines with a number for a time
    per_minute = Traffic(rec).per_minute(now - 3600)  # a restart replays the last hour without failing
    assert sum(row["requests"] for rows in per_minute.values() for row in rows) == 2
    assert set(per_minute) == {"e0", "e1"}


def test_processes_writing_at_once_never_interleave_lines(tmp_path: Path) -> None:
    script = ("import sys; from core.recording import Recording, Limits\n"
              "r = Recording(sys.argv[1], Limits(10**8, 86400))\n"
              "[r.append({'time': 1.0, 'w': sys.argv[2], 'n': n, 'pad': 'y' * 3000}) for n in range(2000)]\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(w)], cwd=Path(__file__).parent.parent)
             for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    seen = list(Recording(tmp_path, Limits(10**8, 86400)).read())
    assert len(seen) == 6000
    for w in "012":
        assert [r["n"] for r in seen if r["w"] == w] == list(range(2000))


def test_the_settings_choose_the_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    on = recording_for(make_settings(traffic_max_mb=2, traffic_retention_days=0.5, traffic_dir="some/where"))
    assert on is not None and on.limits == Limits(2 * 1024 * 1024, 43200) and on.directory == Path("some/where")
    assert recording_for(make_settings(traffic_record=False)) is None
    again = recording_for(make_settings(traffic_max_mb=2, traffic_retention_days=0.5, traffic_dir="some/where"))
    assert again is on, "one writer per process and folder: every experiment's policy shares its segments"
    assert recording_for(make_settings(traffic_max_mb=3, traffic_retention_days=0.5, traffic_dir="some/where")) is not on
    monkeypatch.delenv("HYBRID_TRAFFIC_DIR")  # the suite's (tests/conftest.py): here, the default
    home = recording_for(make_settings())
    assert home is not None and home.directory == Path("~/.local/state/hybrid-serve/traffic").expanduser()


def test_a_recording_exports_its_answered_requests_in_time_order_for_the_simulator(tmp_path: Path) -> None:
    from core.events import export_requests
    from core.sim.traces import TraceFormat, detect_format, read_requests

    rec = Recording(tmp_path / "rec", Limits(10**7, 86400))
    now = time.time()
    rec.append({"time": now - 5, "experiment": "b", "event": "request", "status": 200, "duration_s": 0.5, "window_s": 900})
    rec.append({"time": now - 9, "experiment": "a", "event": "request", "status": 200, "duration_s": 0.25,
                "window_s": 900})  # ended later
    rec.append({"time": now - 4, "experiment": "a", "event": "request", "status": 422, "duration_s": 0.001,
                "window_s": None})  # refused for its input: the policy never saw it
    rec.append({"time": now - 2, "experiment": "b", "event": "request", "status": 499, "duration_s": 3.0,
                "window_s": 1800})  # the client hung up during a cold start: the container started all the same
    rec.append({"time": now - 1, "experiment": "a", "event": "request", "status": 503, "duration_s": 0.1,
                "window_s": 1800})  # its model failed to load: it held a container
    rec.append({"time": now - 3, "experiment": "a", "event": "scale_to_zero", "window_s": 900})
    out = io.StringIO()
    assert export_requests(tmp_path / "rec", out) == 4
    lines = out.getvalue().splitlines()
    assert lines == ["timestamp,experiment_id,duration_ms", f"{now - 9:.6f},a,250.000", f"{now - 5:.6f},b,500.000",
                     f"{now - 2:.6f},b,3000.000", f"{now - 1:.6f},a,100.000"]
    (tmp_path / "trace.csv").write_text(out.getvalue())
    assert detect_format(tmp_path / "trace.csv") is TraceFormat.CSV
    assert [r.experiment_id for r in read_requests(tmp_path / "trace.csv", TraceFormat.CSV)] == ["a", "b", "b", "a"]


def test_a_servers_records_are_written_after_its_turn_of_the_event_loop_in_one_write(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from core.serving.traffic import Traffic

    rec = Recording(tmp_path, Limits(10**8, 86400))
    writes: list[int] = []
    real_write = os.write
    traffic = Traffic(rec)

    def request(n: int) -> None:
        traffic.request(f"e{n}", time.time(), 200, 0.001, cold=False, queue_wait_s=0.0, inputs=1, window_s=900.0,
                        reason="isolated")

    async def turn() -> tuple[int, int]:
        for n in range(3):
            request(n)
        unwritten = sum(1 for _ in tmp_path.glob("*.jsonl"))  # nothing on disk during the requests' own turn
        await asyncio.sleep(0)
        return unwritten, len(list(rec.read()))

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    assert asyncio.run(turn()) == (0, 3)
    monkeypatch.undo()
    assert len(writes) == 1  # the three records of that turn went in one system call
    assert traffic.per_minute(time.time() - 60)["e0"][0]["requests"] == 1  # counted at once, as before

    async def read_at_once() -> list[str]:
        request(7)
        return [r["experiment"] for r in traffic.records()]  # a reader gets the records not written yet too

    assert asyncio.run(read_at_once())[-1] == "e7"
    request(8)  # no event loop: written now
    assert [r["experiment"] for r in rec.read()][-1] == "e8"


def test_records_a_finished_loop_left_behind_are_written_with_the_next_one(tmp_path: Path) -> None:
    import asyncio

    from core.serving.traffic import Traffic

    rec = Recording(tmp_path, Limits(10**8, 86400))
    traffic = Traffic(rec)

    def request(n: int) -> None:
        traffic.request(f"e{n}", time.time(), 200, 0.001, cold=False, queue_wait_s=0.0, inputs=1, window_s=900.0,
                        reason="isolated")

    loop = asyncio.new_event_loop()
    loop.call_soon(request, 1)
    loop.call_soon(loop.stop)  # its loop ends before the turn that would write it
    loop.run_forever()
    loop.close()
    assert list(rec.read()) == []
    request(2)  # no loop: written now, with the one left behind
    assert [r["experiment"] for r in rec.read()] == ["e1", "e2"]

    async def in_another_loop() -> None:
        request(3)
        await asyncio.sleep(0)

    asyncio.run(in_another_loop())
    assert [r["experiment"] for r in rec.read()][-1] == "e3"

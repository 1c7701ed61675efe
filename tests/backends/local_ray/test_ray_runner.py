"""The Ray runner's process-level duties, without starting Ray: stopping on a signal whatever thread
receives it, and keeping secrets out of the environment Ray's processes inherit."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import time

from tests.conftest import REPO_ROOT

WAITER = """
import signal, sys, threading, time
from backends.local_ray.runner import wait_until_stopped

stopped = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stopped.set())

def busy_thread():  # stands for one of Ray's many threads
    print(threading.get_native_id(), flush=True)
    time.sleep(60)

threading.Thread(target=busy_thread, daemon=True).start()
wait_until_stopped(stopped)
print("stopped", flush=True)
"""
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}


def test_sigint_delivered_to_another_thread_stops_the_runner() -> None:
    """Python runs signal handlers in the main thread only: an untimed wait there never sees a SIGINT
    that the kernel handed to another thread (seen under load). The runner's wait wakes to look."""
    proc = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert proc.stdout is not None
        tid = int(proc.stdout.readline())
        time.sleep(0.3)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(SYS_TGKILL[platform.machine()], proc.pid, tid, signal.SIGINT) == 0
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        proc.kill()


def test_the_quiet_console_drops_serves_late_queue_length_notes_and_keeps_other_warnings() -> None:
    """Seen on a loaded machine at Ctrl-C: the drain's calls to the ingress met Serve's router warning
    that a replica answered its queue-length probe late — noise in the console of `hybrid-serve serve`."""
    import logging

    from backends.local_ray.runner import quiet_ray

    serve_logger = logging.getLogger("ray.serve")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    serve_logger.addHandler(handler)
    filters, level = list(serve_logger.filters), serve_logger.level
    try:
        quiet_ray()
        quiet_ray()  # once is enough: no second filter
        assert len(serve_logger.filters) == len(filters) + 1
        serve_logger.warning("Failed to get queue length from Replica(id='x', deployment='ingress') within 0.1s.")
        serve_logger.warning("Replica x failed its health check.")
    finally:
        serve_logger.removeHandler(handler)
        serve_logger.filters[:] = filters
        serve_logger.setLevel(level)
    assert seen == ["Replica x failed its health check."]

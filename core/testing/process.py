"""`hybrid-serve serve` in a process of its own, and free ports to run it on.

Why this module exists: the in-process backend of the testing kit, the project's live-registry tests
and its benchmarks all need the real main job — its own interpreter, its own settings from the
environment, announced ready only once it accepts requests, stopped with Ctrl-C as an operator
stops it. One implementation serves them all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

#: The line `hybrid-serve serve` prints once it accepts requests (core.http.runner.ready_message).
READY_MARK = "is serving on"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Served:
    url: str
    pid: int
    #: The server's latest output lines (it keeps being read, so a talkative server never blocks).
    output: deque[str]
    process: subprocess.Popen[str] = field(repr=False, compare=False)

    def rss_bytes(self) -> int:
        """The server process's resident memory now."""
        with open(f"/proc/{self.pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def interrupt(self, timeout_s: float = 60) -> int | None:
        """Ctrl-C, as an operator stops it: its exit status, or None while it still runs after `timeout_s`."""
        return _interrupt(self.process, timeout_s)


def _interrupt(proc: subprocess.Popen[str], timeout_s: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


@contextmanager
def served(backend: str = "inprocess", env: dict[str, str] | None = None, timeout_s: float = 180,
           port: int | None = None, hub_offline: bool = True) -> Iterator[Served]:
    """Start `hybrid-serve serve --backend BACKEND` on a free port with the settings in `env` (no
    hybrid-serve variable of this process leaks in); yield it once it announced readiness; Ctrl-C it
    after, however the block ends. `hub_offline` (tests, benchmarks): never reach the Hugging Face
    Hub; False (a user's own models, `hybrid-serve bench`): as this process's environment says."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    full_env.update(env or {}, PYTHONUNBUFFERED="1")
    if hub_offline:
        full_env["HF_HUB_OFFLINE"] = "1"
    exe = Path(sys.executable).parent / "hybrid-serve"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]
    proc = subprocess.Popen(
        [*command, "serve", "--backend", backend, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
    )
    try:
        deadline = time.monotonic() + timeout_s
        output = []
        while True:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            output.append(line)
            if READY_MARK in line:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + "".join(output))
        tail: deque[str] = deque(output, maxlen=200)
        threading.Thread(target=tail.extend, args=(proc.stdout,), daemon=True).start()
        yield Served(f"http://127.0.0.1:{port}", proc.pid, tail, proc)
    finally:
        if _interrupt(proc, 60) is None:
            proc.kill()
            proc.wait()

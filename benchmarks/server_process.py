"""Run `hybrid-serve serve` in its own process for benchmarks (its own interpreter, as in production)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.conftest import free_port


@dataclass(frozen=True)
class Served:
    url: str
    pid: int

    def rss_bytes(self) -> int:
        """The server process's resident memory now."""
        with open(f"/proc/{self.pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def served(backend: str = "inprocess", env: dict[str, str] | None = None, timeout_s: float = 180) -> Iterator[Served]:
    """Start the main job on a free port; yield it once it announced readiness; Ctrl-C it after."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "HYBRID_"))}
    full_env.update(env or {}, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    exe = Path(sys.executable).parent / "hybrid-serve"
    proc = subprocess.Popen(
        [str(exe), "serve", "--backend", backend, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
    )
    try:
        deadline = time.monotonic() + timeout_s
        output = []
        while True:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            output.append(line)
            if "is serving on" in line:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + "".join(output))
        yield Served(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

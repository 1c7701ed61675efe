"""The emulated clock of a test: the emulator's windows run `time_scale` times faster than real time.

Why this module exists: a test of a 900 s scaledown window must not take 15 minutes. With
HYBRID_TIME_SCALE=450 the emulator treats one real second as 450 seconds, so that window passes in
2 s; a test states its waits in the emulated seconds it reasons in, and this clock converts them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class EmulatedClock:
    """Converts between emulated seconds (the windows' unit) and real seconds (the test's wall clock)."""

    time_scale: float = 1.0

    def to_real(self, emulated_s: float) -> float:
        """Real seconds that `emulated_s` emulated seconds take."""
        return emulated_s / self.time_scale

    def to_emulated(self, real_s: float) -> float:
        """Emulated seconds that pass in `real_s` real seconds."""
        return real_s * self.time_scale

    def sleep(self, emulated_s: float) -> None:
        """Let `emulated_s` emulated seconds pass (e.g. `clock.sleep(600)`: 600 s of idle time)."""
        time.sleep(self.to_real(emulated_s))

    def describe(self, emulated_s: float) -> str:
        """`900 s (2.00 s real at time scale 450)`, for messages."""
        if self.time_scale == 1:
            return f"{emulated_s:g} s"
        return f"{emulated_s:g} s ({self.to_real(emulated_s):.2f} s real at time scale {self.time_scale:g})"

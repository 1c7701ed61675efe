"""Waits that turn the emulator's observations into assertions with clear failure messages.

Why this module exists: "it scales to zero after its window" is the behaviour a user tests, and a
bare timeout says nothing about why it did not. These waits poll the endpoint's real state and the
scaling event log, and on failure say what was expected and what was seen: the window in force (in
emulated and real seconds), the observed idle time, the replicas, the experiment's events so far.
"""

from __future__ import annotations

import time
from typing import Any

from core.events import SCALING_EVENTS, EventName
from core.testing.client import EndpointClient
from core.testing.clock import EmulatedClock

POLL_S = 0.1
#: Beyond the window itself, what a scale-down may take: the controller's decision interval, a
#: replica's graceful stop, a loaded machine.
SCALE_DOWN_MARGIN_S = 30.0


class Expectations(EndpointClient):
    clock: EmulatedClock
    emulates_windows: bool

    def wait_for_replicas(self, experiment: str, count: int, timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until the experiment runs exactly `count` replicas; its /experiments entry then."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.experiment(experiment)
            if state["replicas"] == count:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"experiment {experiment!r} runs {state['replicas']} replica(s), not {count}, after "
                                     f"{timeout_s:g} s of waiting; {self._situation(experiment, state)}")
            time.sleep(POLL_S)

    def wait_for_scale_to_zero(self, experiment: str, within_s: float | None = None) -> dict[str, Any]:
        """Wait until the experiment scaled to zero after its latest request; that `scale_to_zero` event.
        `within_s` (real seconds): the most to wait — by default its window in force plus a margin."""
        self._needs_windows("scale to zero")
        state = self.experiment(experiment)
        if within_s is None:
            within_s = self.clock.to_real(state["scaledown_window_s"] or 0) + SCALE_DOWN_MARGIN_S
        deadline = time.monotonic() + within_s
        while True:
            event = self._scaled_to_zero(experiment)
            if event is not None and self.experiment(experiment)["replicas"] == 0:
                return event
            if time.monotonic() > deadline:
                state = self.experiment(experiment)
                raise AssertionError(f"experiment {experiment!r} did not scale to zero within {within_s:g} s (real); "
                                     f"{self._situation(experiment, state)}")
            time.sleep(POLL_S)

    def assert_warm(self, experiment: str) -> dict[str, Any]:
        """Fail unless the experiment runs at least one replica now (e.g. inside its window)."""
        state = self.experiment(experiment)
        if not state["replicas"]:
            raise AssertionError(f"experiment {experiment!r} is not warm; {self._situation(experiment, state)}")
        return state

    def _scaled_to_zero(self, experiment: str) -> dict[str, Any] | None:
        """The first `scale_to_zero` event after the experiment's latest request, if any yet."""
        events = self.events(experiment)
        last_request = max((e["time"] for e in events if e["event"] is EventName.REQUEST), default=0.0)
        return next((e for e in events if e["event"] is EventName.SCALE_TO_ZERO and e["time"] > last_request), None)

    def _situation(self, experiment: str, state: dict[str, Any]) -> str:
        """What was seen: the window in force, the idle time, replicas, the experiment's events."""
        window = state.get("scaledown_window_s")
        events = self.events(experiment)
        last_request = max((e["time"] for e in events if e["event"] is EventName.REQUEST), default=None)
        idle = state.get("idle_s")  # emulated, from the server's own activity tracker
        if idle is None and last_request is not None:
            idle = self.clock.to_emulated(time.time() - last_request)
        window_text = "none yet (no request)" if window is None else self.clock.describe(window)
        idle_text = "no request yet" if idle is None else self.clock.describe(round(idle, 1))
        started = events[0]["time"] if events else time.time()
        seen = [(e["event"].value, round(e["time"] - started, 2)) for e in events if e["event"] in SCALING_EVENTS]
        return (f"the scaledown window in force is {window_text} ({state.get('window_reason')}); observed idle time "
                f"since its latest request: {idle_text}; replicas now: {state['replicas']}; its events so far "
                f"(s after the first): {seen}")

    def _needs_windows(self, what: str) -> None:
        if not self.emulates_windows:
            raise AssertionError(f"cannot wait to {what}: this backend does not emulate scaledown windows "
                                 "(start the endpoint with backend='ray')")

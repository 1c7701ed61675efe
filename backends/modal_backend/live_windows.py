"""Applying core's window decisions to Modal live: `update_autoscaler(scaledown_window=...)` per experiment.

Why this module exists: on Modal each experiment is one parametrized-class pool whose scaledown
window can be changed at runtime. The request path must never wait for that call, bursts must not
turn into bursts of API calls, an unchanged window must not be sent twice, a failing call must not
hurt requests, and a redeploy (which resets every override) must be repaired. The controller keeps
the desired window per experiment, and a background task per experiment sends the latest one:
at most once per `min_interval_s`, only when it differs from what is in force under the current
deployment, retrying failures after `retry_s`. The Modal call itself is injected, as is the clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from core.keepwarm.appliers import AppliedWindow
from core.keepwarm.decision import WindowDecision
from core.settings import MODAL_MIN_WINDOW_S

log = logging.getLogger("hybrid_serve.modal.windows")

#: `update(experiment_id, scaledown_window, min_containers=None)`: the Modal call, injected.
UpdateFn = Callable[..., Awaitable[Any]]


class LiveWindowController:
    """A `WindowApplier` for Modal. Call `apply` from the request path; it only schedules work."""

    def __init__(
        self,
        update: UpdateFn,
        deployment: str,
        min_interval_s: float = 10.0,
        retry_s: float = 5.0,
        prewarm_lead_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._update = update
        self.deployment = deployment
        self.min_interval_s = min_interval_s
        self.retry_s = retry_s
        self._clock = clock
        self._sleep = sleep
        self._desired: dict[str, WindowDecision] = {}
        self._applied: dict[str, AppliedWindow] = {}
        self._last_call: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._prewarms: dict[str, asyncio.Task[None]] = {}
        self.prewarm_lead_s = prewarm_lead_s
        self.failures = 0

    # --- WindowApplier -----------------------------------------------------------------------------
    def apply(self, experiment_id: str, decision: WindowDecision) -> None:
        pending = self._prewarms.pop(experiment_id, None)
        if pending is not None:  # a request came: the planned pre-warm is moot
            pending.cancel()
        plan = decision if decision.prewarm_after_s is not None else None
        if plan is not None:  # pre-warm plan: let the pool scale down at once ...
            decision = WindowDecision(MODAL_MIN_WINDOW_S, plan.reason, plan.detail, plan.prewarm_after_s)
        self._desired[experiment_id] = decision
        if self._needs_call(experiment_id):
            self._ensure_task(experiment_id)
        if plan is not None:  # ... and bring one container back before the next request is due
            self._prewarms[experiment_id] = asyncio.get_running_loop().create_task(self._prewarm(experiment_id, plan))

    def in_force(self) -> dict[str, AppliedWindow]:
        return dict(self._applied)

    # --- redeploys ---------------------------------------------------------------------------------
    def on_redeploy(self, deployment: str) -> None:
        """A new deployment reset every override: re-apply the desired windows."""
        if deployment == self.deployment:
            return
        self.deployment = deployment
        for experiment_id in list(self._desired):
            if self._needs_call(experiment_id):
                self._ensure_task(experiment_id)

    async def drain(self) -> None:
        """Wait for the scheduled updates (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Shutdown: cancel pending updates (a redeploy or the next container re-applies them)."""
        tasks = list(self._tasks.values()) + list(self._prewarms.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _prewarm(self, experiment_id: str, decision: WindowDecision) -> None:
        """min_containers = 1 from `lead` before the request is due until the keep window ends."""
        assert decision.prewarm_after_s is not None
        await self._sleep(max(0.0, decision.prewarm_after_s - self.prewarm_lead_s))
        keep = WindowDecision(decision.window_s, decision.reason, decision.detail)
        self._desired[experiment_id] = keep
        await self._call(experiment_id, keep, min_containers=1)
        await self._sleep(self.prewarm_lead_s + decision.window_s)
        await self._call(experiment_id, keep, min_containers=0)
        self._prewarms.pop(experiment_id, None)

    async def _call(self, experiment_id: str, decision: WindowDecision, min_containers: int) -> None:
        self._last_call[experiment_id] = self._clock()
        try:
            await self._update(experiment_id, decision.window_s, min_containers=min_containers)
        except Exception as exc:
            self.failures += 1
            log.warning("update_autoscaler(%s, min_containers=%s) failed: %s: %s",
                        experiment_id, min_containers, type(exc).__name__, exc)
            return
        self._applied[experiment_id] = AppliedWindow(decision.window_s, decision.reason.value, decision.prewarm_after_s,
                                                     min_containers, self._clock(), self.deployment)

    # --- internals -----------------------------------------------------------------------------------
    def _needs_call(self, experiment_id: str) -> bool:
        desired, applied = self._desired.get(experiment_id), self._applied.get(experiment_id)
        if desired is None:
            return False
        return applied is None or applied.window_s != desired.window_s or applied.deployment != self.deployment

    def _ensure_task(self, experiment_id: str) -> None:
        task = self._tasks.get(experiment_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._sync(experiment_id), name=f"window-{experiment_id}")
            self._tasks[experiment_id] = task
            task.add_done_callback(lambda t, e=experiment_id: self._tasks.pop(e, None) if self._tasks.get(e) is t else None)

    async def _sync(self, experiment_id: str) -> None:
        while self._needs_call(experiment_id):
            wait = self._last_call.get(experiment_id, float("-inf")) + self.min_interval_s - self._clock()
            if wait > 0:  # rate limit: later decisions of a burst replace earlier ones meanwhile
                await self._sleep(wait)
                continue
            decision, deployment = self._desired[experiment_id], self.deployment
            self._last_call[experiment_id] = self._clock()
            try:
                await self._update(experiment_id, decision.window_s)
            except Exception as exc:  # requests are unaffected; try again later
                self.failures += 1
                log.warning("update_autoscaler(%s, scaledown_window=%s) failed: %s: %s; retrying in %ss",
                            experiment_id, decision.window_s, type(exc).__name__, exc, self.retry_s)
                await self._sleep(self.retry_s)
                continue
            self._applied[experiment_id] = AppliedWindow(decision.window_s, decision.reason.value, decision.prewarm_after_s,
                                                         0, self._clock(), deployment)

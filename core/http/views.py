"""The state views of the API: `/health`, `/experiments` and `/metrics`.

Why this module exists: the request path serves predictions; these views describe the server to an
operator — each experiment's window, why it was chosen and what is in force, activity, cached
models, the configuration (never a secret) — from the request path's window controller (the plans), what the backend applied, the tracker and the predictor.
What `/health` and `/experiments` answer is scrubbed of credentials (errors name URLs).
The Prometheus gauges (cached models, replicas, windows) are refreshed here, when they are scraped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Collection

from core.auth import AuthMode
from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.controller import AppliedWindow, PoolPlan
from core.keepwarm.cost_report import Usage, cost_section, experiment_cost, today, totals
from core.http.iso_times import with_iso_times
from core.prices import Price
from core.serving.model_status import ModelState, ModelStatus
from core.serving.registry import Experiment
from core.serving.request_path import RequestPath
from core.serving.scrub import scrub_tree

log = logging.getLogger("hybrid_serve.http.views")


#: An experiment its backend knows nothing of: no model, no container.
NEVER_LOADED = ModelStatus(ModelState.COLD, replicas=0)


@dataclass(frozen=True)
class RowSources:
    """What every row of one answer is built from, each read once for all of them: the backend's model
    states, the controller's plans (one pass over the tracker), the ledger, the time, and the plan of an
    experiment with no remembered request (what its first request starts from)."""

    status: dict[str, ModelStatus]
    plans: dict[str, PoolPlan]
    usage: Usage
    now: float
    unused: PoolPlan


class StateViews:
    """Renders the server's state views from its request path (and the backend it runs on)."""

    def __init__(self, path: RequestPath, backend: str, mode: AuthMode):
        self.path = path
        self.backend = backend
        self.mode = mode

    async def windows(self) -> dict[str, dict[str, Any]]:
        """Each remembered experiment's plan (the controller's: window, why, phase), idle time, time left,
        and what the backend's controller applied."""
        path = self.path
        plans = path.controller.plans()
        in_force = await path.applied() if path.applied is not None else path.controller.applied()
        return {e: window_view(plan, path.settings.policy_name, in_force.get(e)) for e, plan in plans.items()}

    async def health(self) -> dict[str, Any]:
        settings = self.path.settings
        cached = await self.path.predictor.cached_models()
        models = await self.path.predictor.model_status()
        windows = await self.windows()
        for experiment_id, window in windows.items():
            model = models.get(experiment_id, NEVER_LOADED)
            window.update(state=model.state.value, replicas=model.replicas, last_cold_start=model.last_cold_start)
        return with_iso_times(scrub_tree({
            "status": "ok",
            "backend": self.backend,
            "authentication": {"mode": self.mode.value},
            "scaling": {
                "base_warm_time_s": settings.base_warm_time,
                "extension_time_s": settings.extension_time,
                "activity_window_s": settings.activity_window,
                "max_containers": settings.max_containers,
                "idle_window_s": settings.idle_window_s,
                "active_window_s": settings.active_window_s,
                "time_scale": settings.time_scale,
                "policy": settings.policy_name,
                "experiments": windows,
            },
            "activity": activity_view(self.path),
            "cost": cost_section(await read_usage(self.path), lambda e: price_of(self.path, e), settings.price(), self.backend, time.time()),
            "registry": self.path.registry.describe(),
            "cached_models": cached,
            "configuration": {k: (str(v) if v is not None and not isinstance(v, (int, float, str)) else v)
                              for k, v in settings.public_dict().items()},
        }))

    async def experiments(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Registered experiments in registry order, `offset` and at most `limit` of them."""
        chosen = list(self.path.registry)[offset: None if limit is None else offset + limit]
        return with_iso_times(scrub_tree(await self._rows(chosen, await read_usage(self.path, [e.id for e in chosen]))))

    async def experiment(self, experiment_id: str) -> dict[str, Any]:
        """One registered experiment: its `/experiments` row and its cost ledger (404 for an unknown id)."""
        experiment = self.path.experiment(experiment_id)
        usage = await read_usage(self.path, [experiment.id])
        row = (await self._rows([experiment], usage))[0]
        row["cost"] = experiment_cost(usage, experiment.id, price_of(self.path, experiment.id), self.backend, time.time())
        return with_iso_times(scrub_tree(row))

    async def row_sources(self, usage: Usage, only: list[ExperimentActivity] | None = None) -> RowSources:
        """What rows are built from, read once for all of them (`usage`: the ledger, read by the caller).
        The plans are the controller's pass over every remembered experiment, or, with `only` (activities
        of a snapshot the caller took: a page of the dashboard), the controller's plan of those alone."""
        status = await self.path.predictor.model_status()
        controller = self.path.controller
        plans = controller.plans() if only is None else controller.plans_of(only)
        return RowSources(status, plans, usage, time.time(), controller.unused(""))

    def row(self, experiment: Experiment, sources: RowSources) -> dict[str, Any]:
        """One experiment's `/experiments` row (the dashboard's rows start from it), not yet scrubbed."""
        model, plan = sources.status.get(experiment.id) or NEVER_LOADED, sources.plans.get(experiment.id)
        return {
            **experiment.describe(),
            "state": model.state.value,
            "replicas": model.replicas,
            "scaledown_window_s": (plan or sources.unused).window_s,
            "burst_window_s": (plan or sources.unused).decision.burst_window_s,
            "cold_start_s": plan.cold_start_s if plan else None,
            "scheduled_containers": plan.scheduled_containers if plan else 0,
            "window_reason": (plan or sources.unused).reason.value,
            "idle_s": round(plan.idle_s, 3) if plan else None,
            "resolved": self.path.registry.identity(experiment.id),
            "dtype_in_use": model.dtype_in_use,
            "dtype_note": model.dtype_note,
            "model": {} if model is NEVER_LOADED else model.to_json(),
            "cost_today": today(sources.usage, experiment.id, price_of(self.path, experiment.id), sources.now),
        }

    async def _rows(self, chosen: list[Experiment], usage: Usage) -> list[dict[str, Any]]:
        sources = await self.row_sources(usage)
        return [self.row(experiment, sources) for experiment in chosen]

    async def metrics(self) -> bytes:
        metrics = self.path.metrics
        metrics.cached_models.set(len(await self.path.predictor.cached_models()))
        for experiment_id, model in (await self.path.predictor.model_status()).items():
            if model.replicas is not None:
                metrics.replicas.labels(experiment_id).set(model.replicas)
        for experiment_id, window in (await self.windows()).items():
            metrics.window.labels(experiment_id).set(window["scaledown_window_s"])
        usage = totals(await read_usage(self.path))
        metrics.usage.update(usage, {e: price_of(self.path, e).per_second for e in usage})
        return metrics.render()


def window_view(plan: PoolPlan, policy_name: str, applied: AppliedWindow | None) -> dict[str, Any]:
    """`/health`'s view of one experiment's plan, and what its backend's controller applied."""
    return {
        "scaledown_window_s": plan.window_s,
        "policy": policy_name,
        "reason": plan.reason.value,
        "detail": plan.decision.detail,
        "prewarm_after_s": plan.decision.prewarm_after_s,
        "burst_window_s": plan.decision.burst_window_s,
        "cold_start_s": plan.cold_start_s,
        "prewarm_lead_s": plan.prewarm_lead_s,
        "scheduled_containers": plan.scheduled_containers,
        "phase": plan.phase.value,
        "plan": plan.describe(),
        "min_containers": plan.min_containers,
        "idle_s": round(plan.idle_s, 3),
        "expires_in_s": round(plan.expires_in_s, 3),
        "applied": None if applied is None else asdict(applied),
    }


def activity_view(path: RequestPath) -> dict[str, Any]:
    """`/health`'s activity: the tracker's totals and each remembered experiment's recent requests."""
    tracker = path.tracker
    stats = tracker.stats()
    return {
        "total_requests": stats.total_requests,
        "total_completions": stats.total_completions,
        "in_flight": stats.in_flight,
        "tracked_experiments": stats.tracked_experiments,
        "forgotten_experiments": stats.forgotten_experiments,
        "activity_window_s": path.settings.activity_window,
        "experiments": {
            a.experiment_id: {
                "requests_in_window": a.requests_in_window,
                "total_requests": a.total_requests,
                "in_flight": a.in_flight,
                "last_request_age_s": round(a.now - a.last_request, 3),
            }
            for a in tracker.snapshot()
        },
    }


async def read_usage(path: RequestPath, only: Collection[str] | None = None) -> Usage:
    """The backend's cost ledger records; None where it keeps none; the error, in words, where the read
    failed (the state views answer anyway)."""
    read = getattr(path.predictor, "usage", None)  # a backend's predictor may predate the ledger
    if read is None:
        return None
    try:
        return await read(only)  # type: ignore[no-any-return]
    except Exception as exc:
        log.warning("could not read the cost ledger: %s: %s", type(exc).__name__, exc)
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def price_of(path: RequestPath, experiment_id: str) -> Price:
    """An experiment's price: of its own GPU when the registry names one, else the deploy's."""
    experiment = path.registry.get(experiment_id)
    return path.settings.price(experiment.gpu if experiment is not None else None)

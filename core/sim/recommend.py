"""Advice from an endpoint's own traffic: which keep-warm setting meets a cold-start target or a budget.

Why this module exists: the simulator answers "what would policy P have done on this trace"; an
operator asks "what should I set". This replays each experiment's own requests (fine mode: their
times and durations, each experiment's containers) through the current setting, the three presets,
fixed windows and the adaptive policy, prices the idle container time per day (the windows still
open at the traffic's end apart: paid once, not every day), and picks the setting that meets the
target — by default the cheapest with no more cold starts than the current one — overall and per
experiment. It also says in plain words when the traffic is too thin for the figures to mean much.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.keepwarm.policies import policy_named
from core.prices import Price
from core.settings import PRESETS, Settings
from core.sim.simulator import SimResult, simulate_requests
from core.sim.traces import Request

DAY_S = 86400.0
#: Fixed windows compared, seconds (Modal's range is 2..3600).
FIXED_WINDOWS_S = (60, 120, 300, 600, 900, 1800, 3600)
#: The adaptive policy at a lower and a higher cold-start price than the default.
ADAPTIVE_KAPPAS = (80, 1280)
#: Below this span, per-day figures are a short stretch scaled up: said so.
SHORT_SPAN_S = 3600.0
#: The shortest span per-day figures are scaled from (a burst of a few seconds is not a rate).
MIN_SPAN_S = 60.0
#: Fewer requests than this in an experiment: its cold-start rate is mostly its first request.
FEW_REQUESTS = 20


def short_id(experiment_id: str, width: int = 18) -> str:
    """An experiment id cut to `width` characters (an ellipsis marks the cut): what fits a table or a note."""
    return experiment_id if len(experiment_id) <= width else experiment_id[:width - 1] + "…"


def current_spec(settings: Settings) -> str:
    return "adaptive" if settings.policy_name == "adaptive" else "hybrid"


def candidate_specs(settings: Settings) -> list[str]:
    """The current setting first, then the presets, fixed windows and the adaptive policy."""
    specs = [current_spec(settings)] + [f"hybrid:{p}" for p in PRESETS] + [f"fixed:{w}" for w in FIXED_WINDOWS_S]
    specs += ["adaptive"] + [f"adaptive:{k}" for k in ADAPTIVE_KAPPAS]
    return list(dict.fromkeys(specs))


def how_to_set(spec: str, settings: Settings) -> str:
    """The variables that select `spec` on a server."""
    kind, _, arg = spec.partition(":")
    if kind == "fixed":
        return f"HYBRID_POLICY=hybrid MODAL_BASE_WARM_TIME={arg} MODAL_EXTENSION_TIME=0"
    if kind == "hybrid" and arg:  # the preset's values themselves: explicit MODAL_* values (as in .env) beat a preset
        return "HYBRID_POLICY=hybrid " + " ".join(f"{name}={value}" for name, value in PRESETS[arg].items())
    if kind == "adaptive":
        return f"HYBRID_POLICY=adaptive HYBRID_ADAPTIVE_KAPPA={float(arg or settings.adaptive_kappa):g}"
    return f"HYBRID_POLICY=hybrid MODAL_BASE_WARM_TIME={settings.base_warm_time} MODAL_EXTENSION_TIME={settings.extension_time}"


@dataclass(frozen=True)
class Outcome:
    """One setting on some traffic: cold starts and idle time, per day at the price."""

    spec: str
    requests: int
    cold_starts: int
    cold_start_pct: float
    p75_experiment_cold_start_pct: float
    idle_hours_per_day: float
    idle_cost_per_day: float | None
    #: The windows still open when the traffic ends: paid once, after it (not scaled to a day).
    idle_hours_after_end: float

    @classmethod
    def of(cls, spec: str, result: SimResult, days: float, price: Price) -> "Outcome":
        idle_s = result.idle_container_minutes * 60
        cost = price.cost(idle_s / days)
        return cls(spec, result.invocations, result.cold_starts,
                   round(100.0 * result.cold_starts / result.invocations, 3) if result.invocations else 0.0,
                   round(result.p75_experiment_cold_pct, 3), round(idle_s / days / 3600, 4),
                   None if cost is None else round(cost, 4), round(result.idle_after_end_minutes / 60, 4))


@dataclass(frozen=True)
class Target:
    """What the advice must meet: a cold-start rate at most, an idle budget per day at most (dollars)."""

    max_cold_start_pct: float | None = None
    budget_per_day: float | None = None


@dataclass
class Advice:
    """Every setting overall and per experiment, the current one, the advised one, and the caveats."""

    current: str
    span_s: float
    days: float
    overall: list[Outcome]
    per_experiment: dict[str, list[Outcome]]
    advised: Outcome | None
    advised_per_experiment: dict[str, Outcome | None]
    why: str
    notes: list[str] = field(default_factory=list)

    def to_json(self, settings: Settings) -> dict[str, Any]:
        def row(o: Outcome | None) -> dict[str, Any] | None:
            return None if o is None else {**o.__dict__, "set": how_to_set(o.spec, settings)}
        return {
            "current": self.current, "span_s": round(self.span_s, 3), "days": round(self.days, 6),
            "overall": [row(o) for o in self.overall], "advised": row(self.advised), "why": self.why,
            "per_experiment": {e: {"settings": [row(o) for o in rows], "advised": row(self.advised_per_experiment[e])}
                               for e, rows in self.per_experiment.items()},
            "notes": self.notes,
        }


def choose(outcomes: list[Outcome], current: Outcome, target: Target) -> tuple[Outcome | None, str]:
    """The setting that meets the target, and why it was chosen (in words). With a cold-start cap (by
    default the current setting's rate) the cheapest within it; with a budget alone the fewest cold
    starts within it; ties go to the least idle after the traffic's end."""
    cap = target.max_cold_start_pct
    if cap is None and target.budget_per_day is None:
        cap = current.cold_start_pct
    ok = [o for o in outcomes if (cap is None or o.cold_start_pct <= cap + 1e-9)
          and (target.budget_per_day is None or (o.idle_cost_per_day or 0.0) <= target.budget_per_day + 1e-9)]
    wanted = " and ".join(w for w in (f"cold starts ≤ {cap:g} %" if cap is not None else "",
                                      f"idle cost ≤ ${target.budget_per_day:g}/day" if target.budget_per_day is not None else "") if w)
    if not ok:
        return None, f"no setting compared meets {wanted}"
    if cap is not None:
        best = min(ok, key=lambda o: (o.idle_cost_per_day or 0.0, o.idle_hours_per_day, o.cold_start_pct, o.idle_hours_after_end))
        return best, f"the cheapest setting with {wanted}"
    best = min(ok, key=lambda o: (o.cold_start_pct, o.idle_cost_per_day or 0.0, o.idle_hours_per_day, o.idle_hours_after_end))
    return best, f"the fewest cold starts with {wanted}"


def advise(requests: list[Request], settings: Settings, price: Price, target: Target = Target(),
           cold_start_s: float = 0.0, default_duration_s: float = 1.0) -> Advice:
    """Replay `requests` (time-ordered) through every candidate setting and choose (see `choose`)."""
    if not requests:
        raise ValueError("no answered request in this traffic: nothing to advise from")
    span_s = requests[-1].time_s - requests[0].time_s
    days = max(span_s, MIN_SPAN_S) / DAY_S
    specs = candidate_specs(settings)
    results = {spec: simulate_requests(requests, policy_named(spec, settings), settings.experiment_max_containers,
                                       default_duration_s, cold_start_s, None, settings.activity_window,
                                       concurrent_inputs=settings.modal_concurrent_inputs) for spec in specs}
    overall = [Outcome.of(spec, results[spec], days, price) for spec in specs]
    current = overall[0]
    advised, why = choose(overall, current, target)
    per_experiment: dict[str, list[Outcome]] = {}
    advised_per: dict[str, Outcome | None] = {}
    for experiment_id in sorted(results[specs[0]].by_experiment):
        rows = [Outcome.of(spec, results[spec].by_experiment[experiment_id], days, price) for spec in specs]
        per_experiment[experiment_id] = rows
        advised_per[experiment_id] = choose(rows, rows[0], target)[0]
    return Advice(specs[0], span_s, days, overall, per_experiment, advised, advised_per, why,
                  _notes(requests, span_s, overall, per_experiment, price))


def _notes(requests: list[Request], span_s: float, overall: list[Outcome], per_experiment: dict[str, list[Outcome]],
           price: Price) -> list[str]:
    """What makes the figures less than they seem, in plain words."""
    notes = []
    if span_s < SHORT_SPAN_S:
        notes.append(f"The traffic spans only {span_s / 60:.1f} minutes: per-day figures scale it up "
                     f"{DAY_S / max(span_s, MIN_SPAN_S):,.0f}×, and the windows still open at its end (shown apart) "
                     "weigh more than they would over a day. Record longer for advice that holds over a day.")
    elif span_s < 0.9 * DAY_S:
        notes.append(f"The traffic spans {span_s / 3600:.1f} hours: per-day figures scale it up "
                     f"{DAY_S / span_s:.1f}×; traffic that changes over the day is not in them.")
    thin = [e for e, rows in per_experiment.items() if rows[0].requests < FEW_REQUESTS]
    if thin:
        named = ", ".join(short_id(e) for e in thin[:3])
        notes.append(f"{len(thin)} experiment(s) have fewer than {FEW_REQUESTS} requests ({named}"
                     f"{', …' if len(thin) > 3 else ''}): their first request is a cold start under every setting, "
                     "so their cold-start rate says little.")
    if len({o.cold_starts for o in overall}) == 1:
        notes.append("Every setting compared gives the same cold starts on this traffic (its gaps are all shorter "
                     "than the shortest window, or all longer than the longest): only the idle cost differs.")
    if price.per_second is None:
        notes.append("No price is known (HYBRID_COST_GPU / HYBRID_COST_PER_S): costs are not shown.")
    return notes

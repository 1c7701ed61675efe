"""The one place that turns a policy's name into a policy: `fixed:600`, `fixed:600:60` (extra containers
60 s), `hybrid`, `hybrid:performance`, `adaptive`, `adaptive:80`.

Why this module exists: the servers read `HYBRID_POLICY`, the simulator and the benchmarks name
policies on the command line; both must get the very same policy for the same name, with a clear
error for a name that means nothing.
"""

from __future__ import annotations

import math

from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy
from core.keepwarm.decision import NamedPolicy
from core.keepwarm.hybrid import HybridParams, fixed_window, hybrid_policy
from core.settings import PRESETS, Settings

POLICY_NAMES = "fixed:SECONDS[:BURST_SECONDS], hybrid, hybrid:PRESET, adaptive[:KAPPA]"


class PolicySpecError(ValueError):
    pass


class UnknownPolicy(PolicySpecError):
    """The name is none of the policies (as opposed to a known policy with a bad argument)."""


def policy_named(spec: str, settings: Settings) -> NamedPolicy:
    """The policy `spec` names; parameters it leaves out come from the settings."""
    kind, _, arg = spec.partition(":")
    if kind == "fixed":
        window, _, burst = arg.partition(":")
        try:
            seconds, burst_s = int(window), int(burst) if burst else None
        except ValueError:
            raise PolicySpecError(f"--policy {spec!r}: fixed needs whole seconds, e.g. fixed:600 or fixed:600:60 "
                                  "(the last container 600 s, extra ones 60 s)") from None
        if seconds <= 0 or (burst_s is not None and not 0 < burst_s <= seconds):
            raise PolicySpecError(f"--policy {spec!r}: the window must be > 0 seconds, an extra containers' one "
                                  "between 1 and the window")
        return NamedPolicy(spec, fixed_window(seconds, burst_s), steady_gap_s=math.inf)
    if kind == "hybrid":
        if not arg:
            params = HybridParams.from_settings(settings)
        elif arg in PRESETS:
            params = HybridParams.from_preset(arg)
        else:
            raise PolicySpecError(f"--policy {spec!r}: unknown preset; choose one of {', '.join(PRESETS)}")
        return NamedPolicy(spec, hybrid_policy(params), steady_gap_s=params.activity_window_s)
    if kind == "adaptive":
        try:
            kappa = float(arg) if arg else settings.adaptive_kappa
        except ValueError:
            raise PolicySpecError(f"--policy {spec!r}: adaptive:KAPPA needs a number (cold-start price in idle minutes)") from None
        if kappa <= 0:
            raise PolicySpecError(f"--policy {spec!r}: KAPPA must be > 0")
        return adaptive_policy(AdaptiveParams(kappa=kappa, fallback=HybridParams.from_settings(settings),
                                              concurrent_inputs=settings.modal_concurrent_inputs), name=spec)
    raise UnknownPolicy(f"--policy {spec!r}: expected {POLICY_NAMES}")


def policy_from_settings(settings: Settings) -> NamedPolicy:
    """The policy HYBRID_POLICY names, with its parameters from the settings."""
    return policy_named(settings.policy_name, settings)


def retention_s(settings: Settings, policy: NamedPolicy) -> float:
    """How long an idle experiment's activity is remembered: longer than any window can last, and —
    for a learning policy — the four hours its idle-gap histogram spans."""
    longest = max(settings.active_window_s, policy.decide(None).window_s) + settings.activity_window
    return max(longest, 4 * 3600.0) if policy.learner is not None else longest

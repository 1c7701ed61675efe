"""Policy specifications as users write them (`fixed:600`, `hybrid`, `hybrid:performance`, `oracle`).

Why this module exists: the simulator CLI and the benchmarks name policies by string; this turns a
name into the very policy function the servers use (core.policy), or says clearly what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from core.adaptive import adaptive_policy, shahrad_histogram_window
from core.policy import HybridParams, fixed_window, hybrid_window
from core.settings import PRESETS, Settings
from core.simulator import Policy

#: Fixed windows of the sweep, in minutes (1–240, denser where the curve bends).
SWEEP_MINUTES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 45, 60, 75, 90, 105, 120, 150, 180, 210, 240)
#: Cold-start prices (κ) of the adaptive policy's sweep.
SWEEP_KAPPAS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
ORACLE = "oracle"


class PolicySpecError(ValueError):
    pass


@dataclass(frozen=True)
class NamedPolicy:
    name: str
    decide: Policy


def parse_policy(spec: str, settings: Settings) -> NamedPolicy:
    kind, _, arg = spec.partition(":")
    if kind == "fixed":
        try:
            seconds = int(arg)
        except ValueError:
            raise PolicySpecError(f"--policy {spec!r}: fixed needs whole seconds, e.g. fixed:600") from None
        if seconds <= 0:
            raise PolicySpecError(f"--policy {spec!r}: the window must be > 0 seconds")
        return NamedPolicy(spec, fixed_window(seconds))
    if kind == "hybrid":
        if not arg:
            params = HybridParams.from_settings(settings)
        elif arg in PRESETS:
            params = HybridParams.from_preset(arg)
        else:
            raise PolicySpecError(f"--policy {spec!r}: unknown preset; choose one of {', '.join(PRESETS)}")
        return NamedPolicy(spec, partial(hybrid_window, params=params))
    if kind == "adaptive":
        try:
            kappa = float(arg) if arg else settings.adaptive_kappa
        except ValueError:
            raise PolicySpecError(f"--policy {spec!r}: adaptive:KAPPA needs a number (cold-start price in idle minutes)") from None
        if kappa <= 0:
            raise PolicySpecError(f"--policy {spec!r}: KAPPA must be > 0")
        return NamedPolicy(spec, adaptive_policy(kappa, HybridParams.from_settings(settings)))
    if kind == "histogram" and not arg:
        return NamedPolicy(spec, shahrad_histogram_window)
    raise PolicySpecError(
        f"--policy {spec!r}: expected fixed:SECONDS, hybrid, hybrid:PRESET, adaptive[:KAPPA], histogram or oracle"
    )

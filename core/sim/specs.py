"""Policies as the simulator names them: every serving policy (core.keepwarm.policies), plus the
Shahrad et al. reference (`histogram`), the `oracle`, and the sweep's grids.

Why this module exists: `hybrid-serve simulate --policy …` and `--sweep` name policies by string;
the serving policies come from keepwarm's one mapping, the simulation-only ones are added here.
"""

from __future__ import annotations

from core.keepwarm.decision import NamedPolicy
from core.keepwarm.policies import POLICY_NAMES, UnknownPolicy, policy_named
from core.settings import PRESETS, Settings
from core.sim.shahrad import SHAHRAD

#: Fixed windows of the sweep, in minutes (1–240, denser where the curve bends).
SWEEP_MINUTES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 45, 60, 75, 90, 105, 120, 150, 180, 210, 240)
#: Cold-start prices (κ) of the adaptive policy's sweep. Above 640 its plans sit at Modal's
#: 60-minute limit: a higher price buys idle time, hardly any warmth.
SWEEP_KAPPAS = (10, 20, 40, 80, 160, 320, 640)
ORACLE = "oracle"
#: The fixed 10-minute keep-alive: Shahrad et al. report idle (wasted memory) time normalised to it.
PAPER_BASELINE = "fixed:600"


def parse_policy(spec: str, settings: Settings) -> NamedPolicy:
    if spec == SHAHRAD.name:
        return SHAHRAD
    try:
        return policy_named(spec, settings)
    except UnknownPolicy:
        raise UnknownPolicy(f"--policy {spec!r}: expected {POLICY_NAMES}, {SHAHRAD.name} or {ORACLE}") from None


def sweep_specs() -> list[str]:
    """Fixed windows 1–240 min, the three presets, the adaptive κ grid and the Shahrad et al. policy."""
    return ([f"fixed:{m * 60}" for m in SWEEP_MINUTES] + [f"hybrid:{p}" for p in PRESETS]
            + [f"adaptive:{k}" for k in SWEEP_KAPPAS] + [SHAHRAD.name])

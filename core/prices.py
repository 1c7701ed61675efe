"""What a container-second costs: the shipped price table, or the operator's own rate.

Why this module exists: the cost ledger counts container-seconds; turning them into money needs the
price of the GPU the containers hold. The table (`gpu_prices.toml`, beside this module) states its
source and date; `HYBRID_COST_PER_S` overrides it with a rate of the operator's own (a discount, another
platform), and `HYBRID_COST_GPU` picks the row (default: the deploy's `MODAL_GPU`, else T4 — locally, what
the same traffic would cost on Modal).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_GPU = "T4"
#: The shipped price table. A data file: an image that ships the code as Python sources must add it too.
PRICE_TABLE = Path(__file__).with_name("gpu_prices.toml")


@dataclass(frozen=True)
class PriceTable:
    source: str
    date: str
    currency: str
    per_second: dict[str, float]

    def lookup(self, gpu: str) -> float | None:
        """The per-second price of one container with `gpu` (Modal's spelling: "a100-80gb", "H100:2" for
        two); None: not in the table."""
        name, _, count = gpu.strip().upper().partition(":")
        price = self.per_second.get(name)
        if price is None:
            return None
        return price * (int(count) if count.isdigit() and int(count) > 0 else 1)


@dataclass(frozen=True)
class Price:
    """The rate the ledger applies, and where it comes from (shown beside every cost)."""

    per_second: float | None  # None: no price known for `gpu` (costs are not shown, seconds are)
    gpu: str | None
    source: str
    currency: str = "USD"

    def cost(self, seconds: float) -> float | None:
        return None if self.per_second is None else seconds * self.per_second

    def describe(self) -> dict[str, Any]:
        return {"per_second": self.per_second, "gpu": self.gpu, "source": self.source, "currency": self.currency}


@lru_cache(maxsize=1)
def price_table() -> PriceTable:
    data = tomllib.loads(PRICE_TABLE.read_text(encoding="utf-8"))
    return PriceTable(str(data["source"]), str(data["date"]), str(data["currency"]),
                      {k.upper(): float(v) for k, v in data["per_second"].items()})


def price_of(gpu: str | None, override_per_s: float | None) -> Price:
    """The price of one container-second: `override_per_s` when set, else the table's for `gpu`."""
    table = price_table()
    if override_per_s is not None:
        return Price(override_per_s, gpu, "HYBRID_COST_PER_S", table.currency)
    name = gpu or DEFAULT_GPU
    per_second = table.lookup(name)
    source = (f"{table.source} ({table.date})" if per_second is not None
              else f"no price for {name!r} in the table: set HYBRID_COST_PER_S")
    return Price(per_second, name, source, table.currency)


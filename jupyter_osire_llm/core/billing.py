"""What a request would cost, counted as Slurm counts it: GPU hours, and billing units from a
partition's ``TRESBillingWeights`` (the default sum: each TRES's count times its weight, memory
per the weight's unit, truncated to a whole number, as the job's ``billing`` TRES comes out).

Billing units are charged per hour of run time; a site may set a price per unit-hour and a
currency (``c.OsireLLM.billing_price``, ``billing_currency``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..schedulers.base import Resources
from .limits import time_to_minutes

_WEIGHT = re.compile(r"([0-9]*\.?[0-9]+)([KMGTP]?)", re.IGNORECASE)
_MEM = re.compile(r"([0-9]+)([KMGT]?)B?", re.IGNORECASE)
_MB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "P": 1024 ** 3}


@dataclass(frozen=True)
class Cost:
    hours: float                       # the time limit
    gpu_hours: float
    units: Optional[int] = None        # billing TRES while it runs (None: no weights)
    price: Optional[float] = None      # units x hours x the site's price
    currency: str = ""

    def billing(self) -> Optional[dict[str, Any]]:
        if self.units is None:
            return None
        doc: dict[str, Any] = {"units": self.units, "unit_hours": round(self.units * self.hours, 3)}
        if self.price is not None:
            doc.update(price=round(self.price, 2), currency=self.currency)
        return doc


def cost(resources: Resources, replicas: int, weights: Mapping[str, str],
         price: Optional[float] = None, currency: str = "") -> Cost:
    """The cost of ``replicas`` jobs of ``resources`` running their whole time limit."""
    hours = time_to_minutes(resources.time or "0") / 60 if resources.time else 0.0
    gpus = resources.gpus * resources.nodes * replicas
    units = billing_units(weights, resources)
    total = units * replicas if units is not None else None
    return Cost(hours=hours, gpu_hours=round(gpus * hours, 3), units=total,
                price=None if price is None or total is None else total * hours * price,
                currency=currency)


def billing_units(weights: Mapping[str, str], res: Resources) -> Optional[int]:
    """Slurm's billing TRES of one job of ``res`` (per-node amounts times nodes)."""
    if not weights:
        return None
    counts = {"cpu": (res.cpus or 1) * res.nodes, "node": res.nodes,
              "gres/gpu": res.gpus * res.nodes}
    if res.gpu_type:
        counts[f"gres/gpu:{res.gpu_type.lower()}"] = res.gpus * res.nodes
    total = 0.0
    for name, text in weights.items():
        match = _WEIGHT.fullmatch(text.strip())
        if not match:
            continue
        weight = float(match[1])
        if name == "mem":
            total += weight * _memory_mb(res.memory) * res.nodes / _MB[match[2].upper() or "M"]
        else:
            total += weight * counts.get(name, 0)
    return math.floor(total + 1e-9)


def _memory_mb(memory: Optional[str]) -> float:
    match = _MEM.fullmatch(memory.strip()) if memory else None
    return int(match[1]) * _MB[match[2].upper() or "M"] if match else 0.0

"""An estimate before launch: whether the request fits the model and the site limits, when
Slurm expects it to start (``sbatch --test-only``) and what it would cost. Nothing is submitted.

The request is read as a launch reads it: a malformed one raises as a launch would (400 naming
the field); a request over a site limit is answered with ``within_limits: false`` and why, a
request Slurm refuses outright (an unknown partition) raises SubmitRejected as a launch would.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from ..core.billing import Cost, cost
from ..core.limits import parse_resources
from ..core.render import ScriptContext
from ..core.usage import Holdings, gpus_in_use
from ..errors import LimitExceeded, RequestError, SchedulerError, SubmitRejected
from ..schedulers.base import JobRequest, Resources, StartEstimate
from .record_keeping import _job_name
from .service import DeploymentService


@dataclass(frozen=True)
class EstimateConfig:
    price: Optional[float] = None          # per billing unit-hour
    currency: str = ""
    confirm_start_after: float = 900.0     # seconds: a later start is worth a question
    confirm_cost: float = 0.0              # billing unit-hours (or price where set); 0: never


class Estimator:
    def __init__(self, service: DeploymentService, config: EstimateConfig = EstimateConfig(),
                 clock: Any = time.time) -> None:
        self.service, self.config, self.clock = service, config, clock

    async def estimate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model, replicas = body.get("model"), body.get("replicas", 1)
        entry, _ = await asyncio.to_thread(self.service.launch_entry, model,
                                           body.get("model_path"), body.get("name"))
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise RequestError(f"'replicas' must be a positive integer, got {replicas!r}",
                               field="replicas")
        asked = parse_resources(body.get("resources"), base=entry.resources)
        wanted, limits_reason = self._limits(asked, replicas)
        if wanted.nodes > 1:   # more nodes than the partition has: refused as a launch is
            await asyncio.to_thread(self.service._check_nodes, entry, wanted)
        fit = await asyncio.to_thread(self._fit, entry, wanted)
        start = StartEstimate(reason="not asked: the request is over a site limit") \
            if limits_reason else await asyncio.to_thread(self._start, entry, wanted)
        info = await asyncio.to_thread(self.service.scheduler.partition_info, wanted.partition)
        price = cost(wanted, replicas, info.billing_weights if info else {}, self.config.price,
                     self.config.currency)
        doc: dict[str, Any] = {
            "model": entry.name, "replicas": replicas,
            "resources": {k: v for k, v in vars(wanted).items() if v is not None},
            "fits": fit[0], "fit_reason": fit[1],
            "within_limits": limits_reason is None, "limits_reason": limits_reason,
            "start": _iso(start.start), "start_reason": start.reason,
            "nodes": start.nodes, "partition": start.partition or wanted.partition,
            "hours": round(price.hours, 3), "gpu_hours": price.gpu_hours,
            "billing": price.billing()}
        doc["summary"] = self._summary(doc, start, price, wanted)
        doc["confirm"] = self._confirm(doc, start, price)
        return doc

    def _limits(self, asked: Resources, replicas: int) -> tuple[Resources, Optional[str]]:
        """The request as the limits fill it in, and why it is over one (None: within)."""
        limits = self.service.limits
        try:
            wanted = limits.apply(asked, replicas)
            holdings = Holdings.of({kind: [r.doc for r in self.service.store.load(kind)]
                                    for kind in ("deployments", "batches")})
            limits.check_count(len(holdings.deployments))
            limits.check_total_gpus(gpus_in_use(holdings), wanted.gpus * wanted.nodes * replicas)
        except LimitExceeded as exc:
            return asked, exc.message
        return wanted, None

    def _fit(self, entry: Any, wanted: Resources) -> tuple[Optional[bool], Optional[str]]:
        size = self.service.sizes.of(entry)
        try:
            self.service.sizes.check(entry, wanted)
        except RequestError as exc:
            return False, exc.message
        if size.weight_bytes is None or not self.service.sizes.gpu_types or not wanted.gpus:
            return None, size.note or "the site's GPU memory or the model's size is not known"
        return True, None

    def _start(self, entry: Any, wanted: Resources) -> StartEstimate:
        service = self.service
        ctx = ScriptContext("estimate", 0, service.job_root / "estimate", service.advertise_host,
                            service.bind_host)
        request = JobRequest(name=_job_name("estimate", 0), folder=ctx.job_dir,
                             script=service.renderer.render(entry, wanted, ctx), resources=wanted)
        try:
            return service.scheduler.estimate_start(request)
        except SubmitRejected:
            raise
        except SchedulerError as exc:
            return StartEstimate(reason=f"Slurm could not say: {exc.message}")

    def _summary(self, doc: dict[str, Any], start: StartEstimate, price: Cost,
                 wanted: Resources) -> str:
        """"starts in about 12 minutes on gpu03; 4 GPU x 8 h = 32 GPU-h, 96 SU"."""
        when = "start time unknown"
        if start.start is not None:
            wait = start.start - self.clock()
            when = "starts now" if wait < 60 else f"starts in about {_duration(wait)}"
            if start.nodes:
                when += f" on {start.nodes}"
        gpus = wanted.gpus * wanted.nodes * doc["replicas"]
        text = f"{when}; {gpus} GPU x {price.hours:g} h = {price.gpu_hours:g} GPU-h"
        billing = doc["billing"]
        if billing:
            text += f", {billing['unit_hours']:g} SU"
            if "price" in billing:
                text += f" ({billing['price']:.2f} {billing['currency']})".replace("  ", " ")
        return text

    def _confirm(self, doc: dict[str, Any], start: StartEstimate, price: Cost) -> Optional[str]:
        """Why a client should ask before launching (None: go ahead)."""
        if doc["fits"] is False:
            return doc["fit_reason"]
        if start.start is not None and start.start - self.clock() > self.config.confirm_start_after:
            return f"it would start in about {_duration(start.start - self.clock())}"
        billing = doc["billing"] or {}
        spend = billing.get("price", billing.get("unit_hours"))
        if self.config.confirm_cost and spend is not None and spend > self.config.confirm_cost:
            unit = billing.get("currency") if "price" in billing else "SU"
            return f"it may cost {spend:g} {unit}, over the site's {self.config.confirm_cost:g}"
        return None


def _iso(epoch: Optional[float]) -> Optional[str]:
    return None if epoch is None else \
        datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes / 60
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"

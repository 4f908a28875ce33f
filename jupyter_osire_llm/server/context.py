"""The services the extension places in the tornado settings at start-up (``settings["osire"]``),
built by ``wiring.build_context``."""
from __future__ import annotations

from dataclasses import dataclass

from ..batches.service import BatchService
from ..core.catalog import Catalog
from ..core.usage_log import UsageLog
from ..deployments.estimate import Estimator
from ..deployments.monitor import Monitor
from ..deployments.on_demand import OnDemand
from ..deployments.policies import Policies
from ..deployments.probes import EngineProbes
from ..deployments.service import DeploymentService
from ..proxy.router import Router
from ..proxy.upstream import UpstreamProxy
from ..schedulers.base import Scheduler


@dataclass
class OsireContext:
    version: str
    scheduler: Scheduler
    scheduler_reason: str
    catalog: Catalog
    service: DeploymentService
    batches: BatchService          # offline batch inference
    router: Router
    proxy: UpstreamProxy
    policies: Policies             # lifecycle policies
    on_demand: OnDemand            # launch on demand
    probes: EngineProbes           # engine endpoint files and health
    monitor: Monitor
    usage: UsageLog                # tokens, GPU hours and billing per model and day
    estimator: Estimator           # what a launch would cost and when it would start

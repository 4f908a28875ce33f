"""The services the extension places in the tornado settings at start-up (``settings["osire"]``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.catalog import Catalog
from ..deployments.monitor import Monitor
from ..deployments.service import DeploymentService
from ..schedulers.base import Scheduler


@dataclass
class OsireContext:
    version: str
    scheduler: Scheduler
    scheduler_reason: str
    catalog: Catalog
    service: DeploymentService
    monitor: Monitor
    router: Any = None                     # router.Router, built after the service
    proxy: Any = None                      # proxy.UpstreamProxy
    policies: Any = None                   # policies.Policies (lifecycle policies)
    batches: Any = None                    # batches.BatchService (offline batch inference)

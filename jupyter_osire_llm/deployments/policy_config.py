"""The lifecycle policies' settings (from the ``c.OsireLLM`` traits) and the words they share."""
from __future__ import annotations

from dataclasses import dataclass

MAX_BACKOFF = 300.0                     # most seconds between two tries
STARTUP_DEADLINE = "not ready after "   # the reason a start-up deadline gives


@dataclass(frozen=True)
class PolicyConfig:
    idle_timeout: float = 1800.0        # seconds without inference before a stop; 0: never
    launch_on_demand: bool = False      # /osire/v1 may launch a catalog model nobody runs
    launch_on_demand_wait: float = 0.0  # seconds such a request waits to be served; 0: 503
    max_restarts: int = 3               # resubmissions of a failed replica
    restart_backoff: float = 10.0       # seconds before the first restart, doubled each time
    renew_before: float = 600.0         # seconds before the time limit a replacement is sent
    allow_pinned: bool = True           # users may pin a deployment (or set idle_timeout 0)
    max_idle_timeout: float = 0.0       # most a user may ask for; 0: no cap
    persist_every: float = 60.0         # most often last_used is written to the shared state
    drain_grace: float = 3.0            # a retired replica gets no request this long before
    drain_timeout: float = 600.0        # its cancel; cancelled anyway after drain_timeout
    startup_timeout: float = 1800.0     # seconds a running job may take to become ready

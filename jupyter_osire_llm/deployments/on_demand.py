"""Launch on demand: a request to /osire/v1 for a catalog model nobody runs launches it (within
the site limits) on whichever server got the request, once for concurrent requests, and holds off
a model that keeps failing at start-up."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable

from ..errors import Conflict, LimitExceeded, ModelNotReady, OsireError
from ..proxy.router import Router, not_ready
from .policy_config import MAX_BACKOFF, STARTUP_DEADLINE, PolicyConfig
from .service import DeploymentService
from .states import FAILED, QUEUED, STARTING, Deployment

log = logging.getLogger("jupyter_osire_llm.deployments.policies")


class OnDemand:
    def __init__(self, service: DeploymentService, router: Router, config: PolicyConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.service, self.router, self.config, self.clock = service, router, config, clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._submit_failures: dict[str, list[tuple[float, str]]] = {}   # launches refused

    async def before_request(self, model: str) -> None:
        """Before /osire/v1 routes a request: launch a catalog model nobody runs (if the site
        allows), and wait for it (up to ``launch_on_demand_wait`` s). Returns when the router can
        serve the model; raises ``ModelNotReady`` (503, Retry-After) when it cannot yet."""
        if not self.config.launch_on_demand or self.router.candidates(model) or \
                model not in self.service.catalog.models:
            return
        launched = False
        if self.service.model_status(model) is None:
            lock = self._locks.setdefault(model, asyncio.Lock())
            async with lock:   # concurrent requests launch once
                await self.service.refresh()
                if self.service.model_status(model) is None and \
                        not self.router.candidates(model):
                    self._hold_failing(model)
                    await self._launch_on_demand(model)
                    launched = True
        deadline = self.clock() + self.config.launch_on_demand_wait
        while not self.router.candidates(model):
            status = self.service.model_status(model)
            if status is None or status.state not in (QUEUED, STARTING):
                return   # failed or gone: the router says so
            if self.clock() >= deadline:
                error = not_ready(status)
                how = "launched on demand just now" if launched else \
                    "launched on demand; ask again later"
                raise ModelNotReady(f"{error.message}; {how}", retry_after=error.retry_after,
                                    **error.extra)
            await asyncio.sleep(0.25)

    async def _launch_on_demand(self, model: str) -> None:
        try:
            d = await self.service.launch(model)
        except LimitExceeded as exc:
            raise LimitExceeded(f"model {model!r} is not running and cannot be launched on "
                                f"demand: {exc.message}", field=exc.field) from exc
        except OsireError as exc:   # not submitted (sbatch refused it): counts as a failure
            self._submit_failures.setdefault(model, []).append(
                (self.clock(), f"not submitted: {exc.message}"))
            raise
        self._submit_failures.pop(model, None)
        log.info("launched %s on demand (deployment %s)", model, d.id)

    def start_failures(self, model: str) -> list[tuple[float, str]]:
        """(when, why) of the launches of ``model`` that failed at start-up in a row, newest
        first: deployments that ended without a replica ever ready (the shared state, so every
        server and a restarted one count them) and this server's submissions that failed."""
        failed: list[tuple[float, str]] = []
        for d in sorted((d for d in self.service.all() if d.model == model),
                        key=lambda d: d.created, reverse=True):
            if not _failed_at_start(d):
                break
            failed.append((d.updated, str(d.reason)))
        failed += self._submit_failures.get(model, [])
        return sorted(failed, reverse=True)

    def _hold_failing(self, model: str) -> None:
        """Raise when launch on demand must not launch ``model`` now: after ``n`` failed
        start-ups in a row it waits ``restart_backoff * 2**(n-1)`` s (at most 300), and after
        ``max_restarts + 1`` it launches it no more (until a launch by hand becomes ready)."""
        failures = self.start_failures(model)
        if not failures:
            return
        (last_at, reason), count, limit = failures[0], len(failures), self.config.max_restarts
        said = f"model {model!r} failed at start-up {count} time(s) in a row (last: {reason})"
        if count > limit:
            raise Conflict(f"{said}; it is not launched on demand again: fix the cause, then "
                           "launch it by hand (sidebar, %osire launch or POST "
                           "/osire/api/deployments)", field="model", state="failed",
                           failures=count)
        retry_at = last_at + min(self.config.restart_backoff * 2 ** (count - 1), MAX_BACKOFF)
        wait = retry_at - self.clock()
        if wait > 0:
            raise ModelNotReady(f"{said}; launch on demand tries it again in {math.ceil(wait)} "
                                f"s (try {count + 1} of {limit + 1})",
                                retry_after=math.ceil(wait), state="failed", failures=count)


def _failed_at_start(d: Deployment) -> bool:
    """Ended without ever serving, and nobody stopped it: failed (or aborted) at start-up,
    or stopped by its start-up deadline."""
    if d.live or any(r.ready_at for r in d.replicas):
        return False
    return d.state == FAILED or (d.stop_reason or "").startswith(STARTUP_DEADLINE)

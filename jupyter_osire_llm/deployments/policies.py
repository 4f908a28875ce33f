"""Lifecycle policies: idle shutdown, launch on demand, auto-restart, renewal before the time
limit, and scaling. They decide *when*; the deployment service does each step (``stop``,
``add_replicas``, ``resubmit``, ``retire``, ``cancel_replica``, ``touch``) through its
compare-and-swap writes, so that two Jupyter servers of one user stay consistent.

Who runs what:
- Every server counts its own inference traffic (the router's ``begin_use``/``end_use``, a
  stream counting until its last byte) and writes ``last_used`` into the shared record at most
  every ``persist_every`` seconds, so that the server that watches sees it.
- Only the watching server (the monitor's leader) acts: ``cycle(leader=True)`` each monitor
  cycle resubmits replicas waiting for a restart, renews replicas near their time limit, cancels
  drained replicas and stops idle deployments.
- The restart decision itself is taken where the failure is recorded (``restarts.py``, called
  by the service inside the same write), so nobody ever sees a deployment "failed" that is about
  to be restarted.
- Launch on demand runs in the request (``on_demand.py``), on whichever server got it.

Draining counts the requests of this server only: a request that another server of the same user
sent to a retired replica less than ``drain_grace`` seconds before it learnt of the retirement
may be cut when the replica is cancelled.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Optional

from ..core.limits import time_to_minutes
from ..errors import (
    Conflict,
    LeaseLost,
    LimitExceeded,
    NotFound,
    OsireError,
    RequestError,
)
from ..proxy.router import Router
from .policy_config import STARTUP_DEADLINE, PolicyConfig
from .restarts import successor_of
from .service import DeploymentService
from .states import QUEUED, READY, STARTING, Deployment, Replica

log = logging.getLogger(__name__)


class Policies:
    def __init__(self, service: DeploymentService, router: Router, config: PolicyConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.service, self.router, self.config, self.clock = service, router, config, clock
        self._written: dict[str, float] = {}          # when this server last wrote last_used
        self._retry_at: dict[tuple[str, int], float] = {}   # a resubmission that failed

    # -- launch options ----------------------------------------------------------------------

    def launch_options(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``idle_timeout`` (seconds, 0: never) and ``pinned`` of a launch request, checked
        against what the site allows."""
        out: dict[str, Any] = {}
        timeout = body.get("idle_timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
                raise RequestError(f"'idle_timeout' must be a number of seconds (0: never), got "
                                   f"{timeout!r}", field="idle_timeout")
            cap = self.config.max_idle_timeout
            if timeout == 0 and not self.config.allow_pinned:
                raise LimitExceeded("this site does not allow deployments that never stop "
                                    "when idle (idle_timeout 0)", field="idle_timeout")
            if cap and timeout > cap:
                raise LimitExceeded(f"idle_timeout {timeout:g} s is over the site limit of "
                                    f"{cap:g} s", field="idle_timeout")
            out["idle_timeout"] = float(timeout)
        pinned = body.get("pinned")
        if pinned is not None:
            if not isinstance(pinned, bool):
                raise RequestError(f"'pinned' must be true or false, got {pinned!r}",
                                   field="pinned")
            if pinned and not self.config.allow_pinned:
                raise LimitExceeded("this site does not allow pinned deployments (exempt from "
                                    "idle shutdown)", field="pinned")
            out["pinned"] = pinned
        return out

    # -- queries ---------------------------------------------------------------------------------

    def idle_timeout(self, d: Deployment) -> float:
        """The deployment's own, else its catalog entry's, else the site's (0: never)."""
        if d.idle_timeout is not None:
            return d.idle_timeout
        entry = self.service.entry_of(d)
        if entry is not None and entry.idle_timeout is not None:
            return entry.idle_timeout
        return self.config.idle_timeout

    def startup_timeout(self, d: Deployment) -> float:
        """Seconds a replica's job may run before its engine is ready: the catalog entry's,
        else the site's."""
        entry = self.service.entry_of(d)
        if entry is not None and entry.startup_timeout is not None:
            return entry.startup_timeout
        return self.config.startup_timeout

    def pinned(self, d: Deployment) -> bool:
        entry = self.service.entry_of(d)
        return d.pinned or bool(entry is not None and entry.pinned)

    def idle_since(self, d: Deployment) -> Optional[float]:
        """Since when no inference request ran (None: one runs now, or it is not serving)."""
        if self.router.busy(d.id):
            return None
        ready = [r.ready_at for r in d.replicas if r.state == READY and r.ready_at]
        if not ready:
            return None
        return max(min(ready), d.last_used or 0.0, self.router.last_used(d.id) or 0.0)

    def view(self, d: Deployment, now: float) -> dict[str, Any]:
        """The policy state for the API, the sidebar and ``%osire ps``."""
        timeout, pinned = self.idle_timeout(d), self.pinned(d)
        since = self.idle_since(d) if d.live else None
        stop_in = None
        if timeout and not pinned and since is not None:
            stop_in = round(max(0.0, since + timeout - now), 1)
        used = max(d.last_used or 0.0, self.router.last_used(d.id) or 0.0) or None
        return {"idle_timeout": timeout, "pinned": pinned, "idle_stop_in": stop_in,
                "last_used": used, "in_flight": self.router.busy(d.id),
                "replicas_wanted": len(_serving(d)) if d.live else 0,
                "renewal": self._renewal_text(d, now) if d.live else None}

    def _renewal_text(self, d: Deployment, now: float) -> Optional[str]:
        parts = []
        for r in d.replicas:
            successor = successor_of(d, r)
            if r.live and r.retire:
                parts.append(f"replica {r.index} draining ({r.retire})")
            elif r.active and successor is not None:
                state = successor.state + (f": {successor.reason}" if successor.reason and
                                           successor.state == QUEUED else "")
                parts.append(f"replica {r.index} near its time limit; replacement "
                             f"{successor.index} {state}")
            elif r.state == READY and self._renew_at(d, r) is not None:
                at = self._renew_at(d, r) or now
                parts.append(f"replica {r.index} renewed in {max(0, round(at - now))} s")
        return "; ".join(parts) or None

    def _renew_at(self, d: Deployment, r: Replica) -> Optional[float]:
        """When a replacement for ``r`` is due: ``renew_before`` s before its time limit (at
        most half its run time, so that a short job is not renewed at once)."""
        time_limit = d.resources.get("time")
        if not (self.config.renew_before > 0 and time_limit and r.started_at):
            return None
        duration = time_to_minutes(str(time_limit)) * 60.0
        return r.started_at + duration - min(self.config.renew_before, duration / 2)

    # -- each monitor cycle ----------------------------------------------------------------------

    async def cycle(self, leader: bool) -> None:
        await self._persist_activity()
        if not leader:
            return
        for d in self.service.all():
            try:
                if d.stop_requested:
                    if any(r.waiting_restart for r in d.replicas) and \
                            not self.service.submitting(d.id):
                        await self.service.end_waiting(d.id, d.stop_reason or "stopped by user")
                    continue
                if not d.live or self.service.elsewhere(d):   # another scheduler's jobs
                    continue
                await self._restarts(d)
                await self._renewals(self.service.get(d.id))
                await self._startup_deadlines(self.service.get(d.id))
                await self._drains(self.service.get(d.id))
                await self._idle(self.service.get(d.id))
            except NotFound:
                continue
            except LeaseLost:   # this server no longer watches: the monitor stops the cycle
                raise
            except OsireError as exc:
                log.warning("lifecycle policy for deployment %s: %s", d.id, exc.message)

    async def _persist_activity(self) -> None:
        """Write this server's ``last_used`` (now, while a request runs) into the shared record,
        at most every ``persist_every`` s (a third of the idle timeout when that is shorter)."""
        now = self.clock()
        for d in self.service.all():
            local = now if self.router.busy(d.id) else self.router.last_used(d.id)
            if not d.live or local is None or local <= (d.last_used or 0.0):
                continue
            timeout = self.idle_timeout(d)
            every = min(self.config.persist_every, timeout / 3) if timeout else \
                self.config.persist_every
            if now - self._written.get(d.id, -1e18) >= every:
                self._written[d.id] = now
                await self.service.touch(d.id, local)

    async def _restarts(self, d: Deployment) -> None:
        now = self.clock()
        for r in d.replicas:
            slot = (d.id, r.index)
            if not r.waiting_restart or (r.restart_at or 0) > now or \
                    self._retry_at.get(slot, 0) > now:
                continue
            try:
                await self.service.resubmit(d.id, r.index)
                self._retry_at.pop(slot, None)
            except OsireError as exc:
                self._retry_at[slot] = now + max(self.config.restart_backoff, 5.0)
                await self._note(d.id, f"restart of replica {r.index} could not be submitted "
                                       f"(will retry): {exc.message}")

    async def _renewals(self, d: Deployment) -> None:
        now = self.clock()
        for r in d.replicas:
            if r.state != READY or not r.active:
                continue
            successor = successor_of(d, r)
            if successor is None:
                due = self._renew_at(d, r)
                tried = sum(1 for s in d.replicas if s.replaces == r.index)
                if due is None or now < due:
                    continue
                if tried >= 2:   # two replacements failed: keep serving until the limit
                    await self._note(d.id, f"replica {r.index} could not be renewed (two "
                                           "replacements failed); it ends at its time limit")
                    continue
                try:
                    added = await self.service.add_replicas(d.id, 1, replaces=r.index)
                    log.info("deployment %s: replica %d nears its time limit; replacement %s "
                             "submitted", d.id, r.index, added)
                except LimitExceeded as exc:
                    await self._note(d.id, f"replica {r.index} cannot be renewed before its "
                                           f"time limit: {exc.message}")
            elif successor.state == READY and successor.healthy:
                await self.service.retire(d.id, [r.index], f"replaced by replica "
                                          f"{successor.index} before its time limit")

    async def _drains(self, d: Deployment) -> None:
        """Cancel retired replicas once no request of this server runs on them."""
        now = self.clock()
        for r in d.replicas:
            if not (r.live and r.retire and r.job_id):
                continue
            since = now - (r.retire_at or now)
            idle = not r.url or self.router.in_flight_at(r.url) == 0
            if r.state == QUEUED or (idle and since >= self.config.drain_grace) or \
                    since >= self.config.drain_timeout:
                await self.service.cancel_replica(d.id, r.index)

    async def _startup_deadlines(self, d: Deployment) -> None:
        """Stop replicas whose job has run ``startup_timeout`` s (counted from the job's start,
        not while it is queued) without the engine becoming ready: the whole deployment when
        none of its replicas serves, else those replicas alone (drained and cancelled)."""
        if not d.live or d.stop_requested:
            return
        timeout, now = self.startup_timeout(d), self.clock()
        late = [r.index for r in d.replicas if r.active and r.job_id and r.state == STARTING
                and r.started_at and now - r.started_at >= timeout]
        if not late:
            return
        reason = f"{STARTUP_DEADLINE}{_duration(timeout)} (start-up deadline, counted from the " \
                 "job's start)"
        log.warning("deployment %s (%s): replica(s) %s %s: stopping", d.id, d.model, late,
                    reason)
        if all(r.index in late for r in d.replicas if r.active):
            await self.service.stop(d.id, reason=reason)
        else:
            await self.service.retire(d.id, late, reason)

    async def _idle(self, d: Deployment) -> None:
        timeout = self.idle_timeout(d)
        if not timeout or self.pinned(d) or d.state != READY:
            return
        since = self.idle_since(d)
        if since is not None and self.clock() - since >= timeout:
            log.info("deployment %s (%s): no inference request for %g s: stopping", d.id,
                     d.model, timeout)
            await self.service.stop(d.id, reason=f"idle: no inference request for "
                                                 f"{_duration(timeout)} (idle timeout)")

    async def _note(self, deployment_id: str, note: str) -> None:
        if self.service.get(deployment_id).note != note:
            log.warning("deployment %s: %s", deployment_id, note)
            await self.service.set_note(deployment_id, note)

    # -- scaling ---------------------------------------------------------------------------------

    async def scale(self, deployment_id: str, replicas: Any) -> Deployment:
        """Run ``replicas`` replicas: add (within the limits) or drain the newest away."""
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise RequestError(f"'replicas' must be an integer, got {replicas!r}",
                               field="replicas")
        most = self.service.limits.max_replicas
        if not 1 <= replicas <= most:
            raise LimitExceeded(f"replicas must be between 1 and {most} (site limit), got "
                                f"{replicas}", field="replicas")
        d = self.service.get(deployment_id)
        if not d.live or d.stop_requested:
            raise Conflict(f"deployment {deployment_id} is {d.state}: it cannot be scaled",
                           field="id")
        serving = _serving(d)
        if replicas > len(serving):
            await self.service.add_replicas(deployment_id, replicas - len(serving))
        elif replicas < len(serving):
            newest = sorted(serving, key=lambda r: r.index, reverse=True)
            await self.service.retire(deployment_id,
                                      [r.index for r in newest[:len(serving) - replicas]],
                                      "scaled down")
        return self.service.get(deployment_id)


def _serving(d: Deployment) -> list[Replica]:
    """Replicas that count towards the deployment's size: active ones, a replica being renewed
    counted once (its replacement)."""
    return [r for r in d.replicas if r.active and
            not (successor_of(d, r) is not None and successor_of(d, r).active)]  # type: ignore


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"

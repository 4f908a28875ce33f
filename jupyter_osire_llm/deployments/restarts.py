"""The restart decision, taken where a replica's failure is written (inside the same
compare-and-swap), so that nobody ever sees a deployment "failed" that is about to be restarted.
The deployment service calls ``RestartRule.on_failure``; the policies' cycle resubmits later."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Optional

from ..schedulers.base import JobState
from .policy_config import MAX_BACKOFF, PolicyConfig
from .states import QUEUED, Deployment, Replica

log = logging.getLogger("jupyter_osire_llm.deployments.policies")


class RestartRule:
    def __init__(self, config: PolicyConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config, self.clock = config, clock

    def on_failure(self, d: Deployment, before: Replica, failed: Replica) -> Replica:
        """A replica that nobody stopped failed: wait and resubmit it, or say why not."""
        limit = self.config.max_restarts
        if d.stop_requested or failed.retire or successor_of(d, failed) is not None or \
                _ended_on_purpose(failed) or limit <= 0:
            return failed
        if failed.restarts >= limit:
            return replace(failed, reason=f"{failed.reason} (not restarted: all {limit} "
                                          "restart(s) used)")
        if before.ready_at is None and failed.failures and failed.failures[-1] == failed.reason:
            return replace(failed, reason=f"{failed.reason} (not restarted: the same failure "
                                          "at start-up twice in a row)")
        number = failed.restarts + 1
        delay = min(self.config.restart_backoff * 2 ** (number - 1), MAX_BACKOFF)
        log.info("deployment %s replica %d: %s; restart %d of %d in %g s", d.id, failed.index,
                 failed.reason, number, limit, delay)
        return replace(failed, state=QUEUED, job_id=None, restart_at=self.clock() + delay,
                       restarts=number, failures=failed.failures + (str(failed.reason),),
                       reason=f"restart {number} of {limit} in {delay:g} s after: "
                              f"{failed.reason}",
                       scheduler_state=None, evidence=None, started_at=None, ready_at=None,
                       ended_at=None, exit_code=None, estimated_start=None)


def _ended_on_purpose(r: Replica) -> bool:
    """Cancelled (scancel, an administrator) or terminated with SIGTERM from outside: somebody
    meant it to end, so it is not restarted."""
    return r.scheduler_state == JobState.CANCELLED.value or r.exit_code == 143 or \
        "(killed by signal 15)" in (r.reason or "")


def successor_of(d: Deployment, r: Replica) -> Optional[Replica]:
    """The live replica renewing ``r``, if any."""
    return next((s for s in d.replicas if s.replaces == r.index and s.live), None)

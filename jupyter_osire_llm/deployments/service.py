"""The deployment service: launch, stop, list and read logs; the owner of deployment state.

Handlers call it; it calls the catalog, the store and the scheduler. The monitor feeds it what it
observes (``observe_job``, ``observe_endpoint``, ``observe_health``). It also answers the router
(``EndpointSource``) from memory, so the proxy's hot path never touches disk or the scheduler.

Every change is a function of the current record, written with a compare-and-swap on its version
(``core/records.py``): two Jupyter servers of one user sharing the state file never lose each
other's changes, and ``refresh`` brings in what the other one wrote. Its parts: what it holds
(``record_keeping.py``), launching (``launch.py``), stopping (``stopping.py``) and observing
(``observe.py``).
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ..core.jobfiles import ENDPOINT_FILE
from ..core.logtail import rank_logs, read_tail
from ..proxy.endpoints import Endpoint, ModelStatus
from .launch import Launching
from .observe import Observing
from .record_keeping import FailureHook
from .states import QUEUED, READY, STARTING, Deployment
from .stopping import Stopping

#: ENDPOINT_FILE: also importable from here for the monitor (it lives in core/jobfiles.py).
__all__ = ["ENDPOINT_FILE", "DeploymentService", "FailureHook"]
_STATE_RANK = {READY: 0, STARTING: 1, QUEUED: 2}


class DeploymentService(Launching, Stopping, Observing):
    # -- queries ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self._deployments.values():
            counts[d.state] = counts.get(d.state, 0) + 1
        return counts

    async def logs(self, deployment_id: str, tail: int = 100) -> list[dict[str, Any]]:
        """Each replica's job log; a replica across nodes adds each other rank's log after it,
        its lines marked ``[rank N]``."""
        deployment = self.get(deployment_id)
        paths = [self.scheduler.output_path(self._job(r)) for r in deployment.replicas]
        texts = await asyncio.to_thread(lambda: [read_tail(p, tail) for p in paths])
        ranks = await asyncio.to_thread(lambda: [rank_logs(Path(r.folder), tail)
                                                 for r in deployment.replicas])
        out = []
        for r, text, extra in zip(deployment.replicas, texts, ranks):
            lines = self._redact(deployment_id, text or r.log_tail or "").splitlines()[-tail:]
            for rank, rank_text in extra:
                lines += [f"[rank {rank}] {line}" for line in
                          self._redact(deployment_id, rank_text).splitlines()]
            out.append({"index": r.index, "job_id": r.job_id, "lines": lines})
        return out

    async def touch(self, deployment_id: str, when: float) -> None:
        """Record the end of an inference request (for idle shutdown, seen by every server)."""
        await self._mutate(deployment_id, lambda d: d if (d.last_used or 0) >= when
                           else replace(d, last_used=when))

    async def set_note(self, deployment_id: str, note: Optional[str]) -> None:
        await self._mutate(deployment_id, lambda d: replace(d, note=note))

    def submitting(self, deployment_id: str) -> bool:
        """Whether this server is submitting jobs of the deployment right now."""
        return deployment_id in self._launching

    def replica_key(self, deployment_id: str, index: int) -> Optional[str]:
        return self._keys.get((deployment_id, index))

    # -- EndpointSource, for the router --------------------------------------------------------

    def ready_endpoints(self, model: str) -> list[Endpoint]:
        return [e for d in self._deployments.values() if d.model == model
                for e in self._endpoints(d)]

    def endpoint_for_deployment(self, deployment_id: str) -> list[Endpoint]:
        deployment = self._deployments.get(deployment_id)
        return self._endpoints(deployment) if deployment else []

    def model_status(self, model: str) -> Optional[ModelStatus]:
        candidates = [d for d in self._deployments.values()
                      if d.model == model and d.state in _STATE_RANK]
        if not candidates:
            return None
        best = min(candidates, key=lambda d: _STATE_RANK[d.state])
        return ModelStatus(model=model, state=best.state, deployment_id=best.id,
                           reason=best.reason)

    def callable_models(self) -> list[str]:
        return sorted({d.model for d in self._deployments.values() if self._endpoints(d)})

    def _endpoints(self, d: Deployment) -> list[Endpoint]:
        return [Endpoint(model=d.model, url=r.url, key=self._keys.get((d.id, r.index)),
                         deployment_id=d.id, replica=r.job_id or str(r.index),
                         fingerprint=r.fingerprint)
                for r in d.replicas if r.state == READY and r.healthy and r.url and
                r.retire is None and self.ours(r)]

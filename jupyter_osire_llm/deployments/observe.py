"""Observations, fed by the monitor: what the scheduler says of each job, the engine's endpoint
file, its health. Each is believed only for the job and run the replica has now."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Awaitable, Callable, Optional

from ..core.logtail import read_tail
from ..core.usage_log import EndedJob, requested_gpus
from ..proxy.endpoints import EngineEndpoint
from ..schedulers.base import Job, JobInfo, JobState
from .record_keeping import DeploymentRecords, _with_replica
from .states import (
    FAILED,
    READY,
    STARTING,
    STOPPING,
    Deployment,
    Replica,
    apply_job_info,
)


#: Where what each ended job used goes (``core.usage_log.UsageLog.job_ended``).
UsageSink = Callable[[EndedJob], Awaitable[None]]


class Observing(DeploymentRecords):
    #: Set by the wiring: each job seen to end is recorded there (every replica's, every run).
    usage_sink: Optional[UsageSink] = None

    def live_jobs(self) -> list[tuple[str, Replica, Job]]:
        """The live jobs this server's scheduler runs (not those of another backend or
        cluster sharing the state file)."""
        return [(d.id, r, self._job(r)) for d in self._deployments.values()
                for r in d.replicas if r.live and r.job_id and self.ours(r)]

    async def observe_job(self, deployment_id: str, index: int, info: JobInfo) -> None:
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            return
        replica = deployment.replicas[index]
        if info.job_id != replica.job_id:   # about a job the replica no longer has
            return
        if info.state is JobState.LOST and not self._lost_confirmed(replica):
            if replica.lost_since is None:
                await self._update_replica(deployment_id, index, lost_since=self.clock())
            return
        tail = ""
        if info.state.terminal and not deployment.stop_requested:
            path = self.scheduler.output_path(self._job(replica))
            tail = self._redact(deployment_id, await asyncio.to_thread(read_tail, path, 30))

        def change(d: Deployment) -> Deployment:
            old = d.replicas[index]
            if old.job_id != info.job_id:   # resubmitted meanwhile (by another server)
                return d
            new = apply_job_info(old, info, stop_requested=d.stop_requested, log_tail=tail,
                                 stop_reason=d.stop_reason)
            if new.state == FAILED and old.state != FAILED and self.on_failure is not None:
                new = self.on_failure(d, old, new)
            return _with_replica(d, new)
        await self._mutate(deployment_id, change)
        if info.state.terminal and self.usage_sink is not None:
            await self.usage_sink(EndedJob(
                job_id=info.job_id, folder=replica.folder, owner=replica.owner,
                model=deployment.model, of="deployment", record=deployment_id,
                gpus=requested_gpus(deployment.resources),
                start=info.start_time or replica.started_at,
                end=info.end_time or replica.ended_at))

    def _lost_confirmed(self, replica: Replica) -> bool:
        """"Vanished" is a verdict from missing evidence: believed only once it has held for
        ``lost_grace`` seconds, since a terminal replica is never asked about again."""
        return replica.lost_since is not None and \
            self.clock() - replica.lost_since >= self.lost_grace

    async def observe_endpoint(self, deployment_id: str, index: int,
                               endpoint: EngineEndpoint) -> None:
        """The engine's own endpoint file: believed only for this replica's job and a run that
        has not ended; it makes a queued replica starting (the engine runs, whatever the
        scheduler last said)."""
        def change(d: Deployment) -> Deployment:
            r = d.replicas[index]
            if not r.live or endpoint.job_id != r.job_id or endpoint.run == r.stale_run or \
                    (r.host, r.port, r.fingerprint, r.run) == \
                    (endpoint.host, endpoint.port, endpoint.fingerprint, endpoint.run):
                return d
            # A new run needs its own health check before it is ready again.
            state = r.state if r.state == STOPPING else STARTING
            return _with_replica(d, replace(
                r, host=endpoint.host, port=endpoint.port, fingerprint=endpoint.fingerprint,
                run=endpoint.run, healthy=False, state=state,
                reason=r.reason if state == STOPPING else None,
                started_at=r.started_at or self.clock(), estimated_start=None))
        if deployment_id in self._deployments:
            await self._mutate(deployment_id, change)

    async def observe_health(self, deployment_id: str, index: int, healthy: bool) -> None:
        def change(d: Deployment) -> Deployment:
            r = d.replicas[index]
            if r.state == STARTING and healthy:
                return _with_replica(d, replace(r, state=READY, healthy=True,
                                                ready_at=self.clock()))
            if r.state == READY and r.healthy != healthy:
                return _with_replica(d, replace(r, healthy=healthy))
            return d
        if deployment_id in self._deployments:
            await self._mutate(deployment_id, change)

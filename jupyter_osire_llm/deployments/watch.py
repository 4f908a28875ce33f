"""Deployments as the monitor watches them (``core.watched.Watched``)."""
from __future__ import annotations

from collections.abc import Hashable
from functools import partial
from typing import Callable

from ..core.watched import WatchedJob
from .probes import EngineProbes
from .service import DeploymentService


class DeploymentWatch:
    def __init__(self, service: DeploymentService, probes: EngineProbes) -> None:
        self.service, self.probes = service, probes

    async def refresh(self) -> None:
        await self.service.refresh()

    def watched_jobs(self) -> list[WatchedJob]:
        return [WatchedJob(job, partial(self.service.observe_job, deployment_id, replica.index))
                for deployment_id, replica, job in self.service.live_jobs()]

    def unsubmitted_by(self) -> set[str]:
        return {d.launched_by for d in self.service.all()
                if d.launched_by and any(r.live and not r.job_id for r in d.replicas)}

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        if any(any(r.live and not r.job_id for r in d.replicas) for d in self.service.all()):
            await self.service.reap_interrupted(alive)
        await self.service.cancel_interrupted()

    async def after_query(self) -> None:
        await self.service.retry_cancels()

    async def housekeeping(self) -> None:
        await self.probes.check()

    def signature(self) -> Hashable:
        return tuple((d.id, d.state, tuple(r.state for r in d.replicas))
                     for d in self.service.all())

    async def close(self) -> None:
        await self.probes.close()

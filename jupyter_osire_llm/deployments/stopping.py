"""Stopping: a deployment's jobs cancelled (again, until the scheduler confirms they ended),
replicas retired, and jobs whose submission was cut off cancelled by name."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from ..errors import Conflict, SchedulerError
from .record_keeping import DeploymentRecords, _job_name
from .states import FAILED, STOPPED, Deployment


class Stopping(DeploymentRecords):
    async def retire(self, deployment_id: str, indexes: list[int], reason: str) -> None:
        """Take replicas out of rotation for good (renewed, scaled down): no new request goes to
        them; one that has no job (waiting for a restart) ends at once. The policies cancel the
        others once drained (``cancel_replica``)."""
        now = self.clock()

        def change(d: Deployment) -> Deployment:
            return replace(d, replicas=tuple(
                (replace(r, state=STOPPED, reason=reason, retire=reason, restart_at=None)
                 if r.waiting_restart else replace(r, retire=reason, retire_at=now))
                if r.index in indexes and r.active else r for r in d.replicas))
        await self._mutate(deployment_id, change)
        self.changed.set()

    async def cancel_replica(self, deployment_id: str, index: int) -> None:
        """Cancel a retired replica's job (again every ``cancel_retry`` s until it ends)."""
        r = self.get(deployment_id).replicas[index]
        if r.job_id and r.live and r.retire and self._cancels.due((deployment_id, index)):
            await self._cancel_quietly(deployment_id, r)
            self.changed.set()

    async def end_waiting(self, deployment_id: str, reason: str) -> None:
        """Replicas waiting for a restart of a deployment that was stopped: nothing to cancel."""
        await self._mutate(deployment_id, lambda d: replace(d, replicas=tuple(
            replace(r, state=STOPPED, reason=reason, restart_at=None) if r.waiting_restart
            else r for r in d.replicas)))

    async def stop(self, deployment_id: str, reason: Optional[str] = None) -> Deployment:
        """Cancel every job of the deployment; stopping twice is harmless.

        The deployment is ``stopping`` until the scheduler confirms each job ended; a cancel that
        fails now is retried by the monitor (``retry_cancels``), and the error is raised.
        """
        deployment = self.get(deployment_id)
        if not deployment.live:
            return deployment
        elsewhere = self.elsewhere(deployment)
        if elsewhere:
            raise Conflict(f"deployment {deployment_id} {elsewhere}: it cannot be stopped from "
                           "here; stop it from a Jupyter server there", field="id")
        reason = reason or "stopped by user"
        deployment = await self._mutate(deployment_id, lambda d: replace(
            d, stop_requested=True, stop_reason=d.stop_reason or reason)) or deployment
        if deployment_id not in self._launching and \
                deployment.launched_by in (None, self.server_id):
            await self._end_unsubmitted(deployment_id, deployment.stop_reason or reason)
        errors = []
        for r in deployment.replicas:
            if r.job_id and r.live:
                try:
                    await self._cancel(deployment_id, r)
                except SchedulerError as exc:
                    errors.append(exc)
        self.changed.set()
        if errors:
            raise errors[0]
        return self.get(deployment_id)

    async def retry_cancels(self) -> None:
        """Cancel again, every ``cancel_retry`` seconds, each job of a stopped deployment that
        the scheduler has not yet ended (a cancel may have failed: controller down, a timeout;
        or another server's stop). Called by the monitor after a query that succeeded."""
        now = self.clock()
        for d in self.all():
            if not (d.stop_requested and d.live) or d.id in self._launching:
                continue
            for r in d.replicas:
                if r.job_id and r.live and self.ours(r) and self._cancels.due((d.id, r.index),
                                                                                now):
                    await self._cancel_quietly(d.id, r)
        await self.cancel_interrupted()

    async def cancel_interrupted(self) -> None:
        """Jobs whose submission was cut off (a server that died, a timeout) may exist without
        us knowing their id: cancel them by name; a failed cancel is kept for the next try."""
        if self._interrupted:
            await self._check_fence()
        names, self._interrupted = self._interrupted, []
        for name in names:
            await self._cancel_named_quietly(name)

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        """Replicas left without a job id by a server that is gone (``alive`` says whether a
        server id still holds its heartbeat): their submission was cut off. Called by the
        monitor that owns the scheduler; a server that is still submitting is left alone."""
        for d in self.all():
            lost = [r for r in d.replicas
                    if r.live and not r.job_id and not r.waiting_restart and self.ours(r)]
            if not lost or not self.records.abandoned(d.id, d.launched_by, alive):
                continue
            self._interrupted += [_job_name(d.id, r.index) for r in lost]
            await self._mutate(d.id, lambda dep: replace(dep, replicas=tuple(
                replace(r, state=FAILED, reason="submission interrupted by a server restart")
                if r.live and not r.job_id and not r.waiting_restart and self.ours(r) else r
                for r in dep.replicas)))

"""A job is called ended only on the scheduler's evidence: failed cancels are retried, a single
"vanished" answer is not believed, and nothing the UI calls stopped keeps running."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Sequence

import pytest

from jupyter_osire_llm.errors import SchedulerUnavailable
from jupyter_osire_llm.server.settings import Timing
from jupyter_osire_llm.schedulers.base import Job, JobInfo, JobRequest, JobState, Scheduler
from jupyter_osire_llm.schedulers.local import LocalScheduler
from service_factory import cycles_until, make_context, one_model_catalog


class FaultyScheduler(Scheduler):
    """The real local backend, with submits, cancels or answers made to fail on demand."""

    name = "faulty-local"

    def __init__(self, state_dir: Path) -> None:
        self.real = LocalScheduler(state_dir)
        self.fail_submit_at: set[int] = set()   # submit number (0-based) that fails
        self.fail_cancels = 0                   # so many cancels fail, then they work
        self.lost = False                       # answer LOST for every job
        self.submits = 0

    def submit(self, request: JobRequest) -> Job:
        number, self.submits = self.submits, self.submits + 1
        if number in self.fail_submit_at:
            raise SchedulerUnavailable("slurmctld did not answer (injected)")
        return self.real.submit(request)

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if self.lost:
            return {j.id: JobInfo(j.id, JobState.LOST, evidence="none") for j in jobs}
        return self.real.query(jobs)

    def cancel(self, job: Job) -> None:
        if self.fail_cancels:
            self.fail_cancels -= 1
            raise SchedulerUnavailable("slurmctld did not answer (injected)")
        self.real.cancel(job)

    def real_state(self, job_id: str, folder: str) -> JobState:
        return self.real.query([Job(job_id, Path(folder))])[job_id].state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sleeper():
    return one_model_catalog("bash -c 'sleep 300' engine")   # an engine that never answers


def test_failed_submit_and_failed_cancel_leave_the_first_replica_stopping(tmp_path):
    scheduler = FaultyScheduler(tmp_path / "local")
    scheduler.fail_submit_at = {1}
    scheduler.fail_cancels = 1
    context = make_context(tmp_path, sleeper(), scheduler, monitor_fast_interval=0.1)
    service, monitor = context.service, context.monitor

    async def scenario() -> None:
        with pytest.raises(SchedulerUnavailable):
            await service.launch("m", replicas=2)
        d = service.all()[0]
        first = d.replicas[0]
        assert d.state == "stopping" and first.live and first.job_id   # not "stopped"
        assert d.replicas[1].state == "stopped" and d.replicas[1].job_id is None
        await cycles_until(monitor, lambda: not service.get(d.id).live)
        ended = service.get(d.id)
        assert ended.state == "failed" and "submission failed" in ended.reason
        assert scheduler.real_state(first.job_id, first.folder).terminal
        await monitor.stop()

    asyncio.run(scenario())


def test_a_stop_whose_cancel_fails_is_retried_until_the_job_ends(tmp_path):
    scheduler = FaultyScheduler(tmp_path / "local")
    context = make_context(tmp_path, sleeper(), scheduler, monitor_fast_interval=0.1)
    service, monitor = context.service, context.monitor

    async def scenario() -> None:
        d = await service.launch("m")
        await cycles_until(monitor, lambda: service.get(d.id).state == "starting")
        scheduler.fail_cancels = 2
        with pytest.raises(SchedulerUnavailable):
            await service.stop(d.id)
        assert service.get(d.id).state == "stopping"
        replica = service.get(d.id).replicas[0]
        assert scheduler.real_state(replica.job_id, replica.folder) is JobState.RUNNING
        await cycles_until(monitor, lambda: service.get(d.id).state == "stopped")
        assert scheduler.real_state(replica.job_id, replica.folder).terminal
        await monitor.stop()

    asyncio.run(scenario())


def test_one_vanished_verdict_is_not_believed(tmp_path):
    clock = Clock()
    scheduler = FaultyScheduler(tmp_path / "local")
    context = make_context(tmp_path, sleeper(), scheduler, monitor_fast_interval=0.1,
                           timing=Timing(clock=clock, lost_grace=60))
    service, monitor = context.service, context.monitor

    async def scenario() -> None:
        d = await service.launch("m")
        await cycles_until(monitor, lambda: service.get(d.id).state == "starting")
        scheduler.lost = True
        for _ in range(5):
            await monitor.cycle()
            await asyncio.sleep(0.12)
        assert service.get(d.id).state == "starting"        # the job still runs
        scheduler.lost = False
        await monitor.cycle()
        await asyncio.sleep(0.12)
        await monitor.cycle()
        assert service.get(d.id).replicas[0].lost_since is None   # good evidence resets it
        scheduler.lost = True
        await cycles_until(monitor, lambda: service.get(d.id).replicas[0].lost_since)
        clock.now += 61                                     # held for the whole grace period
        await cycles_until(monitor, lambda: service.get(d.id).state == "failed")
        assert "vanished" in service.get(d.id).reason
        scheduler.lost = False
        await service.stop(d.id)   # harmless on an ended deployment
        replica = service.get(d.id).replicas[0]
        scheduler.real.cancel(Job(replica.job_id, Path(replica.folder)))
        await monitor.stop()

    asyncio.run(scenario())

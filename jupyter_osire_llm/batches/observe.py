"""What the monitor observes of batches: their jobs (in the same single scheduler query as the
engines), the runner's progress, and submissions a server that died cut off. The monitor is
the only writer of what it observes."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Awaitable, Callable, Optional

from ..core.usage_log import EndedJob, requested_gpus
from ..errors import SchedulerError
from ..schedulers.base import Job, JobInfo, JobState
from .record_keeping import BatchRecords
from .results import ended_run, read_all_progress
from .states import (
    CANCELLED,
    CANCELLING,
    IN_PROGRESS,
    Batch,
    apply_counts,
    apply_job_info,
)

#: The runner's last phase (progress.json) when its engine let it down.
ENGINE_PHASES = {"engine-failed": "the engine exited or never became healthy",
                 "engine-died": "the engine stopped while the batch ran",
                 "engine-impostor": "another process answered in the engine's place (it was sent "
                                    "neither the key nor a prompt)"}


class Observing(BatchRecords):
    #: Set by the wiring: each job seen to end is recorded there (every run of a batch).
    usage_sink: Optional[Callable[[EndedJob], Awaitable[None]]] = None

    def live_jobs(self) -> list[tuple[str, Job]]:
        return [(b.id, Job(b.job_id, Path(b.folder))) for b in self._batches.values()
                if b.live and b.job_id and self.owner.owns(b.owner)]

    async def observe_job(self, batch_id: str, info: JobInfo) -> None:
        batch = self.get(batch_id)
        if info.job_id != batch.job_id or not batch.live:
            return
        now = int(self.clock())
        if info.state is JobState.LOST and not self._lost_confirmed(batch):
            if batch.lost_since is None:
                await self._mutate(batch_id, lambda b: replace(b, lost_since=self.clock())
                                   if b.live and b.job_id == info.job_id else b)
            return
        if info.state.terminal:
            ended = await asyncio.to_thread(ended_run, Path(batch.folder))
            await self._mutate(batch_id, lambda b: _end(b, info, now, *ended)
                               if b.live and b.job_id == info.job_id else b)
            if self.usage_sink is not None:
                await self.usage_sink(EndedJob(
                    job_id=info.job_id, folder=batch.folder, owner=batch.owner,
                    model=batch.model, of="batch", record=batch_id,
                    gpus=requested_gpus(batch.resources),
                    start=info.start_time or batch.in_progress_at, end=info.end_time))
            return
        await self._mutate(batch_id, lambda b: replace(apply_job_info(b, info, now),
                                                       lost_since=None)
                           if b.live and b.job_id == info.job_id else b)
        if batch.cancel_requested and self._cancels.due(batch_id):
            await self._send_cancel(self.get(batch_id))

    def _lost_confirmed(self, batch: Batch) -> bool:
        """"Vanished" is a verdict from missing evidence (as for deployments): believed only
        once it has held for ``lost_grace`` seconds, since an ended batch is never asked about
        again."""
        return batch.lost_since is not None and \
            self.clock() - batch.lost_since >= self.lost_grace

    async def observe_progress(self) -> None:
        """Counts of running batches from their ``progress.json`` (cheap: one small file)."""
        running = [b for b in self._batches.values()
                   if b.status in (IN_PROGRESS, CANCELLING) and b.job_id
                   and self.owner.owns(b.owner)]
        if not running:
            return
        found = await asyncio.to_thread(read_all_progress, [Path(b.folder) for b in running])
        for batch, counts in zip(running, found):
            if counts is not None:
                await self._mutate(batch.id, partial(_with_counts, counts=counts))

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        """Batches whose submission a server that died cut off (validating, or cancelled while
        being submitted): its job may exist by name."""
        for batch in list(self._batches.values()):
            if not batch.live or batch.job_id or not self.owner.owns(batch.owner) or \
                    self.clock() - batch.created_at < 60 or \
                    not self.records.abandoned(batch.id, batch.launched_by, alive):
                continue
            try:
                await asyncio.to_thread(self.scheduler.cancel_named, job_name(batch.id))
            except SchedulerError:
                continue
            now = int(self.clock())
            await self._mutate(batch.id, lambda b: replace(
                b, status=CANCELLED, cancelled_at=now, reason="cancelled by user")
                if b.cancel_requested else replace(
                b, status="failed", failed_at=now,
                reason="its submission was cut off (the Jupyter server stopped)"))


def job_name(batch_id: str) -> str:
    return f"osire-{batch_id}"


def _end(batch: Batch, info: JobInfo, now: int, counts: tuple[int, int], phase: Optional[str],
         tail: str) -> Batch:
    ended = apply_job_info(apply_counts(batch, *counts), info, now)
    why = ENGINE_PHASES.get(phase or "")
    if ended.status == "failed" and why:
        ended = replace(ended, reason=f"{why}; {ended.completed + ended.failed} of "
                                      f"{ended.total} requests answered (see its log)")
    return replace(ended, log_tail=tail or None) if ended.status != "completed" else ended


def _with_counts(batch: Batch, counts: tuple[int, int]) -> Batch:
    return apply_counts(batch, *counts)

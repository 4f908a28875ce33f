"""Batches as the monitor watches them (``core.watched.Watched``)."""
from __future__ import annotations

from collections.abc import Hashable
from functools import partial
from typing import Callable

from ..core.watched import WatchedJob
from .service import BatchService


class BatchWatch:
    def __init__(self, batches: BatchService) -> None:
        self.batches = batches

    async def refresh(self) -> None:
        await self.batches.refresh()

    def watched_jobs(self) -> list[WatchedJob]:
        return [WatchedJob(job, partial(self.batches.observe_job, batch_id))
                for batch_id, job in self.batches.live_jobs()]

    def unsubmitted_by(self) -> set[str]:
        return {b.launched_by for b in self.batches.all() if b.live and not b.job_id}

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        if self.unsubmitted_by():
            await self.batches.reap_interrupted(alive)

    async def after_query(self) -> None:
        """Cancels are retried as each job is observed."""

    async def housekeeping(self) -> None:
        await self.batches.observe_progress()

    def signature(self) -> Hashable:
        return tuple((b.id, b.status) for b in self.batches.all())

    async def close(self) -> None:
        """Nothing runs beside the cycle."""

"""Usage in the state file (core/usage_log.py): token counts of two servers sharing one file,
jobs settled with the scheduler's figures (asked again while it has none, for a bounded time),
and the summary per model and UTC day."""
from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Optional

from jupyter_osire_llm.core.store import Store
from jupyter_osire_llm.core.usage_log import (
    KIND,
    EndedJob,
    UsageLog,
    spread,
    summarize,
)
from jupyter_osire_llm.proxy.usage import TokenTally
from jupyter_osire_llm.schedulers.base import Job, JobOwner, JobUsage
from jupyter_osire_llm.schedulers.local import LocalScheduler

DAY = 1_780_000_000.0          # 2026-05-28, 20:26:40 UTC


class AccountingLater(LocalScheduler):
    """Accounting that has no record for the first ``late`` questions."""

    def __init__(self, folder: Path, late: int, usage: Optional[JobUsage]) -> None:
        super().__init__(folder)
        self.late, self.usage, self.asked = late, usage, 0

    def owner(self) -> JobOwner:
        return JobOwner("slurm", "test")

    def job_usage(self, job: Job) -> Optional[JobUsage]:
        self.asked += 1
        return None if self.asked <= self.late else self.usage


def ended(job_id: str, start: float, end: float, gpus: int = 2) -> EndedJob:
    return EndedJob(job_id=job_id, folder="/tmp", owner="slurm:test", model="m",
                    of="deployment", record="d1", gpus=gpus, start=start, end=end)


def test_two_servers_add_to_one_file(tmp_path):
    async def main():
        store = Store(tmp_path / "s.sqlite")
        now = [DAY]
        logs = [UsageLog(lambda: store, TokenTally(clock=lambda: now[0]), f"server{i}",
                         LocalScheduler(tmp_path / "l"), clock=lambda: now[0]) for i in (1, 2)]
        for round_ in range(3):
            for log in logs:
                log.tally.add("m", 10, 5)
                log.tally.add("other", 1, 1)
            await asyncio.gather(*(log.flush() for log in logs))
        now[0] += 86400
        logs[0].tally.add("m", 100, 50)
        summary = await logs[0].summary(date(2026, 5, 1))
        assert summary["usage"] == [
            {"model": "m", "day": "2026-05-28", "requests": 6, "prompt_tokens": 60,
             "completion_tokens": 30, "gpu_hours": 0.0, "billing": None},
            {"model": "other", "day": "2026-05-28", "requests": 6, "prompt_tokens": 6,
             "completion_tokens": 6, "gpu_hours": 0.0, "billing": None},
            {"model": "m", "day": "2026-05-29", "requests": 1, "prompt_tokens": 100,
             "completion_tokens": 50, "gpu_hours": 0.0, "billing": None}]
        assert summary["totals"]["requests"] == 13
        assert (await logs[1].summary(date(2026, 5, 29)))["totals"]["prompt_tokens"] == 100
        assert len(store.load(KIND)) == 5      # one record per (day, model, server)
    asyncio.run(main())


def test_a_job_is_settled_once_accounting_has_it(tmp_path):
    async def main():
        store = Store(tmp_path / "s.sqlite")
        now = [DAY + 3800]
        scheduler = AccountingLater(tmp_path / "l", late=2,
                                    usage=JobUsage(elapsed=3600.0, billing=5.0, gpus=4))
        log = UsageLog(lambda: store, TokenTally(), "s1", scheduler, clock=lambda: now[0])
        await log.job_ended(ended("42", DAY, DAY + 3700))
        await log.job_ended(ended("42", DAY, DAY + 3700))   # seen again: one record
        first = (await log.summary(date(2026, 5, 1)))["usage"]
        # at once, what was observed: 2 GPUs asked for, 3700 s (split over two UTC days)
        assert sum(r["gpu_hours"] for r in first) == round(2 * 3700 / 3600, 6)
        assert all(r["billing"] is None for r in first)
        await log.settle()                          # no record yet: asked again later
        assert log.pending_jobs() == 1 and scheduler.asked == 1
        await log.settle()                          # not due yet
        assert scheduler.asked == 1
        for _ in range(3):
            now[0] += 60
            await log.settle()
        assert log.pending_jobs() == 0 and scheduler.asked == 3
        rows = (await log.summary(date(2026, 5, 1)))["usage"]
        assert round(sum(r["gpu_hours"] for r in rows), 6) == 4.0      # 4 GPUs x 1 h
        assert round(sum(r["billing"] for r in rows), 6) == 5.0        # 5 units x 1 h
        doc = store.load(KIND)[0].doc
        assert (doc["source"], doc["pending"], doc["billing_units"]) == ("scheduler", False, 5.0)
    asyncio.run(main())


def test_without_accounting_what_was_observed_stays_after_the_bound(tmp_path):
    async def main():
        store = Store(tmp_path / "s.sqlite")
        now = [DAY + 100]
        scheduler = AccountingLater(tmp_path / "l", late=10**6, usage=None)
        log = UsageLog(lambda: store, TokenTally(), "s1", scheduler, clock=lambda: now[0],
                       settle_within=300)
        await log.job_ended(ended("7", DAY, DAY + 90, gpus=1))
        await log.job_ended(ended("8", None, DAY + 90, gpus=1))   # never started
        # a server that starts later finds the pending records and settles them
        other = UsageLog(lambda: store, TokenTally(), "s2", scheduler, clock=lambda: now[0],
                         settle_within=300)
        now[0] += 400
        await other.settle()
        assert other.pending_jobs() == 0
        docs = [r.doc for r in store.load(KIND)]
        assert [(d["job_id"], d["pending"], d["gpu_hours"]) for d in docs] == \
            [("7", False, 90 / 3600)]
    asyncio.run(main())


def test_summary_splits_jobs_over_days_and_skips_odd_records():
    midnight = 1_780_012_800.0   # 2026-05-29 00:00 UTC
    assert spread(midnight - 3600, midnight + 3 * 3600) == {"2026-05-28": 0.25,
                                                             "2026-05-29": 0.75}
    assert spread(None, midnight) == {"2026-05-29": 1.0}
    docs = [{"type": "job", "model": "m", "start": midnight - 3600, "end": midnight + 3 * 3600,
             "gpu_hours": 8.0, "billing": 4.0},
            {"type": "job", "model": "m"}, {"type": "tokens", "day": "2026-05-29"},
            {"type": "tokens", "day": "2026-05-27", "model": "m", "requests": 3}]
    out = summarize(docs, date(2026, 5, 29))
    assert out == {"since": "2026-05-29", "usage": [
        {"model": "m", "day": "2026-05-29", "requests": 0, "prompt_tokens": 0,
         "completion_tokens": 0, "gpu_hours": 6.0, "billing": 3.0}],
        "totals": {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                   "gpu_hours": 6.0, "billing": 3.0}}

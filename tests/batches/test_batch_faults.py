"""Batches when Slurm, the state file or the engine misbehave: nothing half-done, nothing lost.

Core level (no Jupyter server): a BatchService and the Monitor on the real local backend or real
Slurm, jobs running the fake OpenAI engine."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Sequence

import pytest

from jupyter_osire_llm.core.catalog import load_catalog
from jupyter_osire_llm.errors import (Conflict, LimitExceeded, RequestError, SchedulerTimeout, SchedulerUnavailable,
                                      StoreError, SubmitRejected)
from jupyter_osire_llm.schedulers.base import Job, JobInfo
from jupyter_osire_llm.schedulers.local import LocalScheduler
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from engine_tools import batch_engine_pid
from lifecycle_catalog import write_catalog
from service_factory import cycles_until, make_context

CHAT = "/v1/chat/completions"
GPU = {"gpus": 1}


def _jsonl(model: str, count: int, max_tokens: int = 2) -> bytes:
    return "".join(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": CHAT,
                               "body": {"model": model, "max_tokens": max_tokens,
                                        "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
                   for i in range(count)).encode()


class Setup:
    """A deployment service, a batch service and a monitor sharing one store and scheduler."""

    def __init__(self, tmp_path: Path, scheduler: Any, store_path: Path | None = None,
                 **settings: Any) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        catalog = load_catalog(str(write_catalog(tmp_path / "c.yaml", policies=True)))
        context = make_context(tmp_path, catalog, scheduler, db_path=store_path,
                               batch_concurrency=2, monitor_fast_interval=0.2,
                               monitor_slow_interval=1.0, **settings)
        self.service, self.batches, self.monitor = \
            context.service, context.batches, context.monitor

    async def create(self, model: str = "fake-chat", count: int = 4, **body: Any) -> Any:
        upload = await self.batches.upload("in.jsonl", "batch", _jsonl(model, count))
        return await self.batches.create({"input_file_id": upload["id"], "endpoint": CHAT,
                                          **body})

    async def until(self, batch_id: str, done: Any, limit: int = 600) -> Any:
        await cycles_until(self.monitor, lambda: done(self.batches.get(batch_id)), limit=limit)
        return self.batches.get(batch_id)


def _nothing_kept(setup: Setup, tmp_path: Path) -> None:
    assert setup.batches.all() == []
    assert setup.service.store.load("batches") == []
    batches = tmp_path / "jobs" / "batches"
    assert not batches.exists() or not any(batches.iterdir())


@pytest.fixture(params=["slurm", "local"])
def scheduler(request, tmp_path) -> Any:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
        return SlurmCLI(command_timeout=10)
    return LocalScheduler(tmp_path / "local", gpus=2)


def test_one_scheduler_query_watches_engines_and_batches(tmp_path):
    """A deployment and a batch live at once: each query asks about both, in one call."""
    scheduler = LocalScheduler(tmp_path / "local", gpus=2)
    asked: list[list[str]] = []
    real_query = scheduler.query

    def query(jobs: Sequence[Job]) -> dict[str, JobInfo]:
        asked.append(sorted(j.id for j in jobs))
        return real_query(jobs)
    scheduler.query = query  # type: ignore[method-assign]
    setup = Setup(tmp_path, scheduler)

    async def scenario() -> None:
        deployment = await setup.service.launch("fake-chat")
        batch = await setup.create("fake-slow-tokens", 6)
        await setup.until(batch.id, lambda b: b.status == "completed")
        engine_job = setup.service.get(deployment.id).replicas[0].job_id
        assert any(ids == sorted([engine_job, batch.job_id]) for ids in asked), asked
        await setup.service.stop(deployment.id)
        await setup.monitor.stop()
    asyncio.run(scenario())


def test_sbatch_refusal_keeps_nothing(slurm_cluster, tmp_path):
    setup = Setup(tmp_path, SlurmCLI(command_timeout=10))

    async def scenario() -> None:
        with pytest.raises(SubmitRejected):
            await setup.create(resources={"partition": "nosuchpartition"})
    asyncio.run(scenario())
    _nothing_kept(setup, tmp_path)


def test_sbatch_missing_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    setup = Setup(tmp_path, SlurmCLI(command_timeout=5))
    with pytest.raises(SchedulerUnavailable):
        asyncio.run(setup.create())
    _nothing_kept(setup, tmp_path)


def test_sbatch_timeout_cancels_what_it_may_have_made(slurm_cluster, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("sbatch")
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\n{real} \"$@\" >/dev/null\nsleep 5\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    setup = Setup(tmp_path, SlurmCLI(command_timeout=1.5))
    with pytest.raises(SchedulerTimeout):
        asyncio.run(setup.create())
    _nothing_kept(setup, tmp_path)
    out = subprocess.run(["squeue", "-h", "-t", "PD,R", "-o", "%j %Z"], capture_output=True,
                         text=True).stdout      # this test's jobs only: others may still end
    assert not [line for line in out.splitlines() if str(tmp_path) in line], out


def test_a_job_whose_record_cannot_be_written_is_cancelled(tmp_path):
    scheduler = LocalScheduler(tmp_path / "local")
    setup = Setup(tmp_path, scheduler)
    submitted: list[str] = []
    real_submit = scheduler.submit

    def submit(request: Any) -> Job:
        job = real_submit(request)
        submitted.append(job.id)
        setup.service.store.save = _full_disk  # type: ignore[method-assign]
        return job
    scheduler.submit = submit  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        asyncio.run(setup.create())
    info = scheduler.query([Job(submitted[0], tmp_path)])[submitted[0]]
    assert info.state.terminal, info


def _full_disk(*args: Any) -> bool:
    raise StoreError("database or disk is full")


def test_a_full_disk_on_upload_is_a_clear_error_and_leaves_no_file(tmp_path):
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "files").write_text("not a folder")   # writes under it fail
    with pytest.raises(StoreError) as err:
        asyncio.run(setup.batches.upload("in.jsonl", "batch", b"{}\n"))
    assert "cannot store the upload" in err.value.message
    assert setup.service.store.load("files") == []


def test_too_many_batches_are_refused_before_submitting(tmp_path):
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))
    setup.batches.max_batches = 1

    async def scenario() -> None:
        first = await setup.create("fake-slow-tokens", 20)
        with pytest.raises(RequestError) as err:
            await setup.create()
        assert "max_batches" in err.value.message
        await setup.batches.cancel(first.id)
        await setup.until(first.id, lambda b: b.status == "cancelled")
        await setup.monitor.stop()
    asyncio.run(scenario())
    assert len(setup.batches.all()) == 1


def test_batches_and_deployments_count_against_one_gpu_limit(tmp_path):
    """OsireLLM.max_total_gpus holds whichever way the GPUs are taken: a batch, a launch, a
    resume. Each refusal names the limit and submits nothing."""
    scheduler = LocalScheduler(tmp_path / "local", gpus=2)
    setup = Setup(tmp_path, scheduler, max_total_gpus=1)
    jobs = lambda: sorted(p.name for p in (tmp_path / "local").glob("*") if p.is_dir())

    async def scenario() -> None:
        batch = await setup.create("fake-slow-tokens", 20, resources=GPU)   # holds 1 GPU
        before = jobs()
        with pytest.raises(LimitExceeded) as err:
            await setup.service.launch("fake-gpu")
        assert err.value.field == "max_total_gpus" and "1 in use" in err.value.message
        assert setup.service.all() == [] and jobs() == before
        await setup.batches.cancel(batch.id)
        await setup.until(batch.id, lambda b: b.status == "cancelled")
        deployment = await setup.service.launch("fake-gpu")          # the GPU is free again
        before = jobs()
        with pytest.raises(LimitExceeded) as err:
            await setup.create(resources=GPU)
        assert err.value.field == "max_total_gpus"
        with pytest.raises(LimitExceeded):
            await setup.batches.resume(batch.id)
        assert setup.batches.get(batch.id).status == "cancelled"
        assert [b.id for b in setup.batches.all()] == [batch.id] and jobs() == before
        await setup.service.stop(deployment.id)
        await cycles_until(setup.monitor, lambda: not setup.service.get(deployment.id).live)
        resumed = await setup.batches.resume(batch.id)               # and free once more
        assert resumed.status in ("queued", "in_progress")
        await setup.batches.cancel(batch.id)
        await setup.until(batch.id, lambda b: b.status == "cancelled")
        await setup.monitor.stop()
    asyncio.run(scenario())


def test_a_resume_counts_against_max_batches(tmp_path):
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))
    setup.batches.max_batches = 1

    async def scenario() -> None:
        first = await setup.create("fake-slow-tokens", 20)
        await setup.batches.cancel(first.id)
        await setup.until(first.id, lambda b: b.status == "cancelled")
        second = await setup.create("fake-slow-tokens", 20)
        with pytest.raises(RequestError) as err:
            await setup.batches.resume(first.id)
        assert "max_batches" in err.value.message
        assert setup.batches.get(first.id).status == "cancelled"
        assert setup.batches.get(first.id).jobs == first.jobs     # no second job
        await setup.batches.cancel(second.id)
        await setup.until(second.id, lambda b: b.status == "cancelled")
        await setup.monitor.stop()
    asyncio.run(scenario())


def test_an_engine_that_never_starts_fails_the_batch_with_its_log(scheduler, tmp_path):
    setup = Setup(tmp_path, scheduler)

    async def scenario() -> Any:
        batch = await setup.create("fake-crash")
        batch = await setup.until(batch.id, lambda b: not b.live)
        await setup.monitor.stop()
        return batch
    batch = asyncio.run(scenario())
    assert batch.status == "failed"
    assert batch.reason.startswith("the engine exited or never became healthy; 0 of 4"), batch
    assert batch.log_tail and batch.to_openai()["osire"]["resumable"]


def test_an_engine_that_dies_mid_batch_leaves_the_rest_for_a_resume(tmp_path):
    """The runner stops instead of failing every request left: they stay unanswered."""
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))

    async def scenario() -> Any:
        batch = await setup.create("fake-slow-tokens", 20)
        await setup.until(batch.id, lambda b: b.completed >= 2)
        # This batch's engine only: a pattern would also kill other tests' engines.
        os.kill(batch_engine_pid(setup.batches.get(batch.id).folder), signal.SIGKILL)
        batch = await setup.until(batch.id, lambda b: not b.live)
        await setup.monitor.stop()
        return batch
    batch = asyncio.run(scenario())
    assert batch.status == "failed", batch
    assert batch.reason.startswith("the engine stopped while the batch ran"), batch.reason
    assert batch.failed == 0 and 2 <= batch.completed < 20 and batch.left > 0


def test_two_servers_share_batches(tmp_path):
    """A second Jupyter server of the user (same state file) sees the batch and can cancel it;
    only one of them watches the scheduler."""
    scheduler = LocalScheduler(tmp_path / "local", gpus=2)
    first = Setup(tmp_path / "a", scheduler, store_path=tmp_path / "shared.sqlite")
    second = Setup(tmp_path / "b", scheduler, store_path=tmp_path / "shared.sqlite")

    async def scenario() -> None:
        batch = await first.create("fake-slow-tokens", 30)
        await first.until(batch.id, lambda b: b.status == "in_progress")
        await second.monitor.cycle()
        assert second.batches.get(batch.id).status == "in_progress"
        assert not second.monitor.leader
        await second.batches.cancel(batch.id)
        ended = await first.until(batch.id, lambda b: not b.live)
        assert ended.status == "cancelled"
        await second.monitor.cycle()
        assert second.batches.get(batch.id).status == "cancelled"
        await first.monitor.stop()
        await second.monitor.stop()
    asyncio.run(scenario())


def test_a_delete_never_removes_a_batch_another_server_has_resumed(tmp_path):
    """The second server still sees the batch cancelled while the first has resumed it: its
    delete is refused (the record moved on) and the running batch keeps its record and folder."""
    scheduler = LocalScheduler(tmp_path / "local", gpus=2)
    first = Setup(tmp_path / "a", scheduler, store_path=tmp_path / "shared.sqlite")
    second = Setup(tmp_path / "b", scheduler, store_path=tmp_path / "shared.sqlite")

    async def scenario() -> None:
        batch = await first.create("fake-slow-tokens", 30)
        await first.batches.cancel(batch.id)
        await first.until(batch.id, lambda b: b.status == "cancelled")
        await second.batches.refresh()
        assert second.batches.get(batch.id).status == "cancelled"
        await first.batches.resume(batch.id)                      # second has not seen it
        with pytest.raises(Conflict, match="changed by another server"):
            await second.batches.delete(batch.id)
        assert second.batches.get(batch.id).live                 # it looked again
        with pytest.raises(Conflict, match="cancel it first"):
            await second.batches.delete(batch.id)
        assert Path(batch.folder).is_dir() and first.batches.get(batch.id).live
        await first.batches.cancel(batch.id)
        await first.until(batch.id, lambda b: b.status == "cancelled")
        await second.batches.refresh()
        assert (await second.batches.delete(batch.id))["deleted"]
        assert not Path(batch.folder).exists()
        await first.batches.refresh()
        assert first.batches.all() == [] and first.service.store.load("batches") == []
        await first.monitor.stop()
        await second.monitor.stop()
    asyncio.run(scenario())


def test_a_time_limit_expires_the_batch_and_a_resume_answers_the_rest(tmp_path):
    """The job's time limit (1 minute) ends it part-way: expired, answers kept; resumed, the
    rest is answered and none twice. Local backend (Slurm checks limits only every 30 s)."""
    setup = Setup(tmp_path, LocalScheduler(tmp_path / "local"))

    async def scenario() -> Any:
        batch = await setup.create("fake-slow-tokens", 200, resources={"time": "1"})
        expired = await setup.until(batch.id, lambda b: not b.live, limit=2000)
        assert expired.status == "expired", expired
        assert "time limit ended it after" in expired.reason
        assert 0 < expired.completed < 200 and expired.to_openai()["osire"]["resumable"]
        resumed = await setup.batches.resume(batch.id)
        assert resumed.status == "queued" and len(resumed.jobs) == 2
        done = await setup.until(batch.id, lambda b: not b.live, limit=2000)
        await setup.monitor.stop()
        return expired, done
    expired, done = asyncio.run(scenario())
    assert done.status in ("completed", "expired"), done
    assert done.completed > expired.completed
    folder = Path(done.folder)
    ids = [json.loads(l)["custom_id"] for l in (folder / "output.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == done.completed       # nothing answered twice

"""A full disk during a launch leaves no half-launched deployment: no job without a record that
can stop it, no record of a job that was never submitted, and a clear error. The file systems
are real (small tmpfs mounts, so they fill up for real); they need root."""
from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

from jupyter_osire_llm.errors import ConfigError, StoreError
from jupyter_osire_llm.schedulers.base import Job, JobInfo, JobRequest, Scheduler
from jupyter_osire_llm.schedulers.local import LocalScheduler
from jupyter_osire_llm.core.store import Store
from service_factory import make_context, make_service, one_model_catalog


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs; ``fill(disk)`` fills it up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs (CI runs as root)")
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def sleeper():
    return one_model_catalog("bash -c 'sleep 300' engine")


def test_full_job_root_keeps_nothing_and_submits_nothing(tmp_path, small_disk):
    scheduler = LocalScheduler(tmp_path / "local")
    service = make_service(tmp_path, sleeper(), scheduler, job_root=small_disk / "jobs")
    (small_disk / "jobs").mkdir()
    fill(small_disk)
    with pytest.raises(ConfigError) as err:
        asyncio.run(service.launch("m"))
    assert "No space left" in err.value.message and "job_root" in err.value.message
    assert service.all() == [] and Store(tmp_path / "s.sqlite").load("deployments") == []
    assert list((small_disk / "jobs").iterdir()) == []
    assert not list((tmp_path / "local").glob("**/state.json"))   # no job was handed on


def test_full_state_disk_refuses_the_launch_before_any_job(tmp_path, small_disk):
    scheduler = LocalScheduler(tmp_path / "local")
    service = make_service(tmp_path, sleeper(), scheduler, db_path=small_disk / "state.sqlite")
    fill(small_disk)
    with pytest.raises(StoreError) as err:
        asyncio.run(service.launch("m"))
    assert err.value.status == 503 and "state file" in err.value.message
    assert service.all() == [] and not (tmp_path / "jobs").exists()


class FillsTheDiskOnSubmit(Scheduler):
    """The real local backend; the state disk fills up while sbatch is away."""

    name = "local"

    def __init__(self, state_dir: Path, disk: Path) -> None:
        self.real, self.disk = LocalScheduler(state_dir), disk
        self.jobs: list[Job] = []

    def submit(self, request: JobRequest) -> Job:
        job = self.real.submit(request)
        self.jobs.append(job)
        fill(self.disk)
        return job

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        return self.real.query(jobs)

    def cancel(self, job: Job) -> None:
        self.real.cancel(job)


def test_disk_full_after_submission_cancels_the_job_and_recovers(tmp_path, small_disk):
    scheduler = FillsTheDiskOnSubmit(tmp_path / "local", small_disk)
    service = make_service(tmp_path, sleeper(), scheduler, db_path=small_disk / "state.sqlite")
    with pytest.raises(StoreError):
        asyncio.run(service.launch("m"))
    (job,) = scheduler.jobs

    async def wait_ended() -> None:
        for _ in range(100):
            if scheduler.real.query([job])[job.id].state.terminal:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the job the state file could not record still runs")
    asyncio.run(wait_ended())

    (small_disk / "filler").unlink()          # space again: the next server start reconciles
    context = make_context(tmp_path, sleeper(), scheduler.real,
                           db_path=small_disk / "state.sqlite")
    again, monitor = context.service, context.monitor

    async def reconcile() -> None:
        for _ in range(3):
            await monitor.cycle()
        await monitor.stop()
    asyncio.run(reconcile())
    (d,) = again.all()
    assert d.state == "failed" and "interrupted" in d.reason

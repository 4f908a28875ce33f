"""The ``backend`` fixture the contract suite runs on: real Slurm, local, pyslurm (where it imports)."""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from jupyter_osire_llm import errors
from jupyter_osire_llm.schedulers.base import Job, JobInfo, JobRequest, Resources, Scheduler

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    """A scheduler under test plus what differs between backends (time limit units, outages)."""

    kind: str
    scheduler: Scheduler
    root: Path
    #: a --time value that ends the job soon, and how long that takes at most
    short_time: str
    short_time_wait: float
    make_fresh: Callable[[], Scheduler]
    jobs: list[Job] = field(default_factory=list)
    counter: int = 0

    def submit(self, script: str, resources: Optional[Resources] = None, name: str = "t") -> Job:
        self.counter += 1
        folder = self.root / f"job{self.counter}"
        job = self.scheduler.submit(JobRequest(name, script, folder, resources or Resources()))
        self.jobs.append(job)
        return job

    def info(self, job: Job) -> JobInfo:
        return self.scheduler.query([job])[job.id]

    def wait(self, job: Job, until: Callable[[JobInfo], bool], timeout: float = 30,
             history: Optional[list[JobInfo]] = None) -> JobInfo:
        deadline = time.monotonic() + timeout
        while True:
            info = self.info(job)
            if history is not None:
                history.append(info)
            if until(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job.id} still {info} after {timeout} s")
            time.sleep(0.2)

    def cleanup(self) -> None:
        for job in self.jobs:
            try:
                self.scheduler.cancel(job)
            except errors.SchedulerError:
                pass


def _slurm(root: Path) -> Backend:
    from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
    return Backend("slurm", SlurmCLI(command_timeout=15), root, short_time="1",
                   short_time_wait=100, make_fresh=lambda: SlurmCLI(command_timeout=15))


def _local(root: Path) -> Backend:
    from jupyter_osire_llm.schedulers.local import LocalScheduler
    state = root / "local-state"

    def make() -> LocalScheduler:
        return LocalScheduler(state, gpus=2, kill_grace=2)
    return Backend("local", make(), root, short_time="0:02", short_time_wait=15, make_fresh=make)


def _pyslurm(root: Path) -> Backend:
    from jupyter_osire_llm.schedulers.slurm.pyslurm import PySlurm
    try:
        sched = PySlurm()
    except errors.SchedulerUnavailable as exc:
        pytest.skip(f"pyslurm backend not testable here: {exc.message}")
    return Backend("pyslurm", sched, root, short_time="1", short_time_wait=100,
                   make_fresh=PySlurm)


@pytest.fixture(params=["slurm", "local", "pyslurm"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind in ("slurm", "pyslurm"):
        request.getfixturevalue("slurm_cluster")
    tmp_path.chmod(0o755)
    b = {"slurm": _slurm, "local": _local, "pyslurm": _pyslurm}[kind](tmp_path)
    yield b
    b.cleanup()


def cluster(*args: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), *args], check=True,
                   capture_output=True, timeout=120)

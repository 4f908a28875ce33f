"""Scheduler backends and the choice between them."""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import errors
from .base import Job, JobInfo, JobOwner, JobRequest, JobState, Resources, Scheduler

__all__ = ["Job", "JobInfo", "JobOwner", "JobRequest", "JobState", "Resources", "Scheduler",
           "KINDS", "choose_scheduler"]

KINDS = ("auto", "pyslurm", "slurm", "local")


def choose_scheduler(kind: str, *, state_dir: Path, local_gpus: int = 0,
                     command_timeout: float = 15) -> tuple[Scheduler, str]:
    """The backend for ``kind`` and a sentence saying why it was chosen.

    "auto" takes pyslurm if it imports, else the Slurm CLI if ``sbatch`` is on PATH (no call to
    the controller: a controller that is down now is reported by the first query, not hidden by
    falling back to local), else local. An explicit kind that cannot work raises
    ``SchedulerUnavailable``; an unknown kind raises ``ConfigError``.
    """
    from .local import LocalScheduler
    from .slurm.cli import SlurmCLI
    from .slurm.pyslurm import PySlurm

    if kind not in KINDS:
        raise errors.ConfigError(f"unknown scheduler {kind!r}; expected one of {', '.join(KINDS)}",
                                 field="scheduler")
    if kind == "pyslurm":
        return PySlurm(), "configured: scheduler = pyslurm"
    if kind == "slurm":
        if shutil.which("sbatch") is None:
            raise errors.SchedulerUnavailable("scheduler = slurm, but sbatch is not on PATH")
        return SlurmCLI(command_timeout=command_timeout), "configured: scheduler = slurm"
    if kind == "local":
        return (LocalScheduler(state_dir, gpus=local_gpus),
                "configured: scheduler = local (jobs run as processes on this machine)")
    try:
        return PySlurm(), "auto: pyslurm imports"
    except errors.SchedulerUnavailable as exc:
        why_not = str(exc)
    sbatch = shutil.which("sbatch")
    if sbatch:
        return (SlurmCLI(command_timeout=command_timeout),
                f"auto: {why_not}; sbatch found at {sbatch}, using the Slurm command-line tools")
    return (LocalScheduler(state_dir, gpus=local_gpus),
            f"auto: {why_not}; no sbatch on PATH, running jobs as local processes")

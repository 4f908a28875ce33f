"""The Slurm command lines (sbatch, squeue, sacct, scontrol, scancel) and how they run.

Building a command line is a pure function. Every command runs with a controlled environment
(``command_environment``): a user's ``SLURM_TIME_FORMAT``, ``SQUEUE_*`` or an enclosing job's
``SLURM_*`` never change what we read; sbatch alone gets the job's environment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ... import errors
from ..base import OUTPUT_FILE, JobRequest, Resources, command_environment

#: squeue fields, in order: id, state, reason, nodes, submit, start (estimated when pending),
#: end, user (none of them can contain "|"), and the working folder last (a path may): it tells
#: our job from another with the same id (ids restart when a cluster's state is reset).
SQUEUE_FORMAT = "%i|%T|%r|%N|%V|%S|%e|%u|%Z"
#: WorkDir last for the same reasons (accounting keeps every job that had an id).
SACCT_FIELDS = "JobID,State,ExitCode,NodeList,Submit,Start,End,User,Reason,WorkDir"
SCONTROL_CONFIG = ["scontrol", "show", "config"]
SCONTROL_PING = ["scontrol", "ping"]
#: Seconds ``scontrol ping`` may take (it answers at once when slurmctld is up or known down).
PING_TIMEOUT = 5


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[:2000]


def sbatch_command(request: JobRequest, script_path: Path) -> list[str]:
    """argv for submitting ``script_path`` with the request's resources (never its env values)."""
    folder = request.folder
    argv = ["sbatch", "--parsable", f"--job-name={request.name}",
            f"--output={folder / OUTPUT_FILE}", f"--chdir={folder}", "--export=ALL"]
    return argv + resource_options(request.resources) + [str(script_path)]


def test_only_command(request: JobRequest) -> list[str]:
    """``sbatch --test-only``: when and where the request would start; the script comes on
    stdin, nothing is submitted."""
    return ["sbatch", "--test-only", f"--job-name={request.name}"] + \
        resource_options(request.resources)


def resource_options(res: Resources) -> list[str]:
    opts = [f"--nodes={res.nodes}"]
    if res.gpus:
        opts.append(f"--gres=gpu:{res.gpu_type}:{res.gpus}" if res.gpu_type
                    else f"--gres=gpu:{res.gpus}")
    for flag, value in (("--cpus-per-task", res.cpus), ("--mem", res.memory),
                        ("--time", res.time), ("--partition", res.partition),
                        ("--account", res.account), ("--qos", res.qos),
                        ("--constraint", res.constraint)):
        if value is not None:
            opts.append(f"{flag}={value}")
    return opts


def squeue_command(job_ids: Sequence[str], user: Optional[str] = None) -> list[str]:
    """One squeue for many jobs. With ``user`` the controller sends only that user's jobs
    (slurm_load_job_user) instead of its whole job table; other users' jobs then look purged."""
    argv = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}",
            f"--format={SQUEUE_FORMAT}"]
    return argv + ([f"--user={user}"] if user else [])


def sacct_command(job_ids: Sequence[str]) -> list[str]:
    """``--duplicates``: every record of an id, not only the newest (ids are reused after a reset
    of the cluster's state; ``parse_sacct`` keeps the one run in the job's folder)."""
    return ["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
            f"--jobs={','.join(job_ids)}", f"--format={SACCT_FIELDS}"]


def scontrol_job_command(job_id: str) -> list[str]:
    """One job on one line: the exit code squeue cannot give."""
    return ["scontrol", "show", "job", "-o", job_id]


def scancel_command(job_id: str) -> list[str]:
    return ["scancel", job_id]


def scancel_named_command(name: str, user: str) -> list[str]:
    return ["scancel", "--name", name, "--user", user]


def installed(command: str) -> bool:
    """Whether ``command`` is on the PATH the commands run with."""
    return shutil.which(command, path=command_environment(os.environ).get("PATH")) is not None


def run_command(argv: list[str], timeout: float,
                env: Optional[dict[str, str]] = None, stdin: Optional[str] = None) -> Completed:
    """Run one Slurm command, with a controlled environment unless ``env`` is given and
    ``stdin`` as its input. Raises ``SchedulerUnavailable`` when it is not installed,
    ``subprocess.TimeoutExpired`` as is."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              env=env if env is not None else command_environment(os.environ),
                              timeout=timeout, input=stdin,
                              stdin=subprocess.DEVNULL if stdin is None else None)
    except FileNotFoundError as exc:
        raise errors.SchedulerUnavailable(f"{argv[0]} is not installed or not on PATH") from exc
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def timeout_error(action: str, timeout: float) -> errors.SchedulerError:
    """A command that gave no answer in ``timeout`` s: ``scontrol ping`` (answers at once) tells
    a controller that is down from one that is slow."""
    try:
        ping = subprocess.run(SCONTROL_PING, capture_output=True, text=True, timeout=PING_TIMEOUT,
                              stdin=subprocess.DEVNULL, env=command_environment(os.environ))
        if "DOWN" in ping.stdout:
            return errors.SchedulerUnavailable(
                f"Slurm controller is down ({action} gave no answer in "
                f"{timeout:g} s): {ping.stdout.strip().splitlines()[0]}")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return errors.SchedulerTimeout(f"{action} gave no answer in {timeout:g} s")

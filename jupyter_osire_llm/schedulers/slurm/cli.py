"""Slurm through its command-line tools (sbatch, squeue, scontrol, sacct, scancel); 22.05 and newer.

One ``squeue`` call answers a whole query cycle; the extra calls are rare: ``scontrol show job``
once for a job that ended without leaving its exit file, ``sacct`` for jobs already purged from
the controller (only when accounting exists, detected once). ``squeue`` asks for this user's jobs
only (``--user``: the controller then sends only those, not its whole table). The command lines
are in ``commands``, the parsers in ``parse``, what the answers mean in ``reconcile``.
"""
from __future__ import annotations

import logging
import os
import pwd
import subprocess
import time
from typing import Any, Optional, Sequence

from ... import errors
from ..base import (SCRIPT_FILE, Job, JobInfo, JobOwner, JobRequest, JobUsage, PartitionInfo,
                    Scheduler, StartEstimate, job_environment, with_exit_trap)
from .commands import (SCONTROL_CONFIG, Completed, installed, run_command, sacct_command,
                       sbatch_command, scancel_command, scancel_named_command,
                       scontrol_job_command, squeue_command, test_only_command,
                       timeout_error)
from .parse import (classify_failure, conf_cluster_name, parse_cluster_name, parse_job_usage,
                    parse_partition, parse_sacct, parse_test_only,
                    parse_sbatch, parse_scontrol_job, parse_squeue)
from .reconcile import ACCOUNTING_GRACE, ExitDetails, Listing, Reconciler

log = logging.getLogger(__name__)


PARTITION_TTL = 300.0


class SlurmCLI(Scheduler):
    name = "slurm"

    def __init__(self, command_timeout: float = 15.0, user: Optional[str] = None,
                 sacct_grace: float = ACCOUNTING_GRACE) -> None:
        self.command_timeout = command_timeout
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self._logged: set[str] = set()                # problems already logged once
        self._owner: Optional[JobOwner] = None
        self._exit_details = ExitDetails(self._scontrol_job)
        self.reconciler = Reconciler(self.user, self._sacct, log=self._log_sacct,
                                     grace=sacct_grace, finish=self._exit_details.complete)
        self._partitions: dict[Optional[str], tuple[float, Optional[PartitionInfo]]] = {}

    def job_usage(self, job: Job) -> Optional[JobUsage]:
        """Elapsed time, billing and GPUs of a finished job from accounting (one ``sacct`` per
        job, once it ended); None without accounting or before it has the record."""
        try:
            result = self._run(["sacct", "--noheader", "--parsable2", "--allocations",
                                f"--jobs={job.id}", "--format=JobID,ElapsedRaw,AllocTRES,End"],
                               "sacct")
        except errors.SchedulerError:
            return None
        return parse_job_usage(result.stdout, job.id) if result.returncode == 0 else None

    def estimate_start(self, request: JobRequest) -> StartEstimate:
        """``sbatch --test-only``: Slurm's expected start and nodes; a request Slurm refuses
        raises SubmitRejected as a submission would."""
        result = self._run(test_only_command(request), "sbatch", stdin=request.script)
        if result.returncode != 0:
            raise classify_failure(result, "sbatch")
        return parse_test_only(result.stderr + result.stdout)

    def partition_info(self, partition: Optional[str]) -> Optional[PartitionInfo]:
        """``scontrol show partition -o`` (one call per partition every 5 minutes at most)."""
        cached = self._partitions.get(partition)
        if cached and time.monotonic() - cached[0] < PARTITION_TTL:
            return cached[1]
        try:
            result = self._run(["scontrol", "show", "partition", "-o", *(
                [partition] if partition else [])], "scontrol")
        except errors.SchedulerError:
            return None
        info = parse_partition(result.stdout, partition) if result.returncode == 0 else None
        self._partitions[partition] = (time.monotonic(), info)
        return info

    def describe(self) -> dict[str, Any]:
        """What the admin page shows; the owner is the one read at start-up (describing the
        backend costs the controller nothing)."""
        return {**super().describe(), "user": self.user, "accounting": self.reconciler.accounting,
                "owner": self._owner.key if self._owner else None}

    def owner(self) -> JobOwner:
        """The cluster, by the controller's ``ClusterName`` (``scontrol show config``, asked
        once), else slurm.conf's."""
        if self._owner is None:
            try:
                result: Optional[Completed] = self._run(list(SCONTROL_CONFIG), "scontrol")
            except errors.SchedulerError:
                result = None
            name = parse_cluster_name(result.stdout) if result and result.returncode == 0 \
                else None
            self._owner = JobOwner("slurm", name or conf_cluster_name(os.environ) or "")
        return self._owner

    # -- running commands

    def _run(self, argv: list[str], action: str, env: Optional[dict[str, str]] = None,
             stdin: Optional[str] = None) -> Completed:
        """Run one Slurm command, with a controlled environment unless ``env`` is given."""
        self.count_call(argv[0])
        try:
            return run_command(argv, self.command_timeout, env, stdin)
        except subprocess.TimeoutExpired as exc:
            self.count_call("scontrol")    # the ping that tells down from slow
            raise timeout_error(action, self.command_timeout) from exc

    def _log_once(self, command: str, problems: Sequence[str]) -> None:
        for problem in problems:
            if problem not in self._logged:
                if len(self._logged) > 1000:
                    self._logged.clear()
                self._logged.add(problem)
                log.warning("%s: %s; that job keeps its last known state", command, problem)

    def _log_sacct(self, problems: Sequence[str]) -> None:
        self._log_once("sacct", problems)

    # -- the interface

    def submit(self, request: JobRequest) -> Job:
        request.folder.mkdir(parents=True, exist_ok=True)
        script = request.folder / SCRIPT_FILE
        script.write_text(with_exit_trap(request.script, request.folder))
        script.chmod(0o700)
        env = job_environment(os.environ, request.env)
        result = self._run(sbatch_command(request, script), "sbatch", env=env)
        if result.returncode != 0:
            raise classify_failure(result, "sbatch")
        return Job(parse_sbatch(result.stdout), request.folder)

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if not jobs:
            return {}
        return self.reconciler.answers(jobs, self._squeue(jobs))

    def cancel(self, job: Job) -> None:
        result = self._run(scancel_command(job.id), "scancel")
        if result.returncode == 0 or "Invalid job id" in result.message:
            return
        raise classify_failure(result, "scancel")

    def cancel_named(self, name: str) -> None:
        result = self._run(scancel_named_command(name, self.user), "scancel")
        if result.returncode != 0:
            raise classify_failure(result, "scancel")

    # -- what the reconciliation asks of Slurm

    def _squeue(self, jobs: Sequence[Job]) -> Listing:
        """The live listing: one squeue for all ``jobs``."""
        result = self._run(squeue_command([j.id for j in jobs], self.user), "squeue")
        if result.returncode != 0:
            # One unknown id alone makes squeue fail; several unknown ids give empty output.
            if "Invalid job id specified" not in result.message:
                raise classify_failure(result, "squeue")
            return Listing("squeue")
        seen = parse_squeue(result.stdout)
        self._log_once("squeue", seen.problems)
        return seen

    def _sacct(self, jobs: list[Job]) -> Optional[Listing]:
        """Accounting records for ``jobs``; None when the cluster keeps none."""
        if not installed("sacct"):
            return None
        result = self._run(sacct_command([j.id for j in jobs]), "sacct")
        if result.returncode != 0:
            if "accounting storage is disabled" in result.message.lower():
                return None
            raise classify_failure(result, "sacct")
        return parse_sacct(result.stdout, {j.id: str(j.folder) for j in jobs})

    def _scontrol_job(self, job: Job) -> Optional[JobInfo]:
        """A finished job's exit details; None when the controller has purged it meanwhile."""
        result = self._run(scontrol_job_command(job.id), "scontrol")
        if result.returncode != 0:
            return None
        try:
            return parse_scontrol_job(result.stdout)
        except errors.SchedulerOutputError as exc:
            self._log_once("scontrol", [exc.message])
            return None

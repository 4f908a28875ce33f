"""Slurm through its command-line tools (sbatch, squeue, scontrol, sacct, scancel); 22.05 and newer.

Command building and output parsing are module-level pure functions, tested on recorded output
(``tests/data/slurm/``). One ``squeue`` call answers a whole query cycle; the extra calls are rare:
``scontrol show job`` once for a job that ended without leaving its exit file, ``sacct`` for jobs
already purged from the controller (only when accounting exists, detected once). ``squeue`` asks
for this user's jobs only (``--user``: the controller then sends only those, not its whole table).

Every command runs with a controlled environment (``command_environment``): a user's
``SLURM_TIME_FORMAT``, ``SQUEUE_*`` or an enclosing job's ``SLURM_*`` never change what we read.
A line we cannot parse (an unknown state of a newer Slurm) costs only that job's answer this
cycle, logged once; a failing ``sacct`` costs only the answers of purged jobs, for a while.

Jobs of other users are never reported as ours: the user column is checked and a foreign job is
answered as LOST with the reason "owned by <user>".
"""
from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ... import errors
from ..base import (
    OUTPUT_FILE,
    SCRIPT_FILE,
    Job,
    JobInfo,
    JobOwner,
    JobRequest,
    JobState,
    Resources,
    Scheduler,
    command_environment,
    exit_file_info,
    job_environment,
    same_folder,
    with_exit_trap,
)

log = logging.getLogger(__name__)

#: squeue fields, in order: id, state, reason, nodes, submit, start (estimated when pending),
#: end, user (none of them can contain "|"), and the working folder last (a path may): it tells
#: our job from another with the same id (ids restart when a cluster's state is reset).
SQUEUE_FORMAT = "%i|%T|%r|%N|%V|%S|%e|%u|%Z"
#: WorkDir last for the same reasons (accounting keeps every job that had an id).
SACCT_FIELDS = "JobID,State,ExitCode,NodeList,Submit,Start,End,User,Reason,WorkDir"
#: Seconds a failing sacct may keep purged jobs unanswered before the exit file decides alone.
SACCT_GRACE = 120.0
DEFAULT_CONF = "/etc/slurm/slurm.conf"

_STATES = {s.value: s for s in JobState if s is not JobState.LOST}
#: Rarer Slurm states, mapped onto ours (the original name becomes the reason).
_STATE_ALIASES = {
    "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "REQUEUE_FED": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING, "SUSPENDED": JobState.PENDING,
    "STOPPED": JobState.PENDING, "RESIZING": JobState.RUNNING, "SIGNALING": JobState.COMPLETING,
    "STAGE_OUT": JobState.COMPLETING, "PREEMPTED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED, "BOOT_FAIL": JobState.NODE_FAIL, "DEADLINE": JobState.TIMEOUT,
    "RESV_DEL_HOLD": JobState.PENDING, "POWER_UP_NODE": JobState.PENDING,
}
_UNAVAILABLE = ("Unable to contact slurm controller", "Connection refused",
                "Socket timed out", "Zero Bytes were transmitted", "Slurm backup controller in standby")


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[:2000]


# ---------------------------------------------------------------- pure: commands

def sbatch_command(request: JobRequest, script_path: Path) -> list[str]:
    """argv for submitting ``script_path`` with the request's resources (never its env values)."""
    folder = request.folder
    argv = ["sbatch", "--parsable", f"--job-name={request.name}",
            f"--output={folder / OUTPUT_FILE}", f"--chdir={folder}", "--export=ALL"]
    return argv + resource_options(request.resources) + [str(script_path)]


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


# ---------------------------------------------------------------- pure: parsing

def parse_sbatch(stdout: str) -> str:
    """``sbatch --parsable`` prints ``id`` or ``id;cluster``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise errors.SchedulerOutputError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


def parse_time(text: str) -> Optional[float]:
    """Slurm's local ISO time (``2026-11-23T05:06:10``) as epoch seconds; N/A, Unknown -> None."""
    text = text.strip()
    if not text or text in ("N/A", "Unknown", "None", "NONE", "(null)"):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError as exc:
        raise errors.SchedulerOutputError(f"unparsable Slurm time {text!r}") from exc


def parse_state(text: str) -> tuple[JobState, Optional[str]]:
    """A Slurm state name (``CANCELLED by 0`` from sacct too) -> our state and an extra reason."""
    name = text.strip().split(" ", 1)[0].rstrip("+")
    if name in _STATES:
        return _STATES[name], None
    if name in _STATE_ALIASES:
        return _STATE_ALIASES[name], name
    raise errors.SchedulerOutputError(f"unknown Slurm job state {text!r}")


def parse_exit_code(text: str) -> tuple[Optional[int], Optional[int]]:
    """Slurm's ``status:signal`` (``3:0``, ``0:15``) -> (exit status, signal or None)."""
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*", text)
    if not m:
        raise errors.SchedulerOutputError(f"unparsable Slurm exit code {text!r}")
    status, sig = int(m.group(1)), int(m.group(2))
    return status, (sig or None)


def _reason(text: str) -> Optional[str]:
    text = text.strip()
    return None if text in ("", "None", "(null)") else text


@dataclass
class Parsed:
    """A listing (squeue, sacct) as far as it could be read: the jobs whose line parsed, and what
    did not. ``unreadable`` holds the ids of jobs whose line is there but not understood;
    ``anonymous`` says a line could not even be attributed to a job id (any job missing from
    ``jobs`` may then be that one)."""

    jobs: dict[str, tuple[str, JobInfo]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)   # id -> working folder, where listed
    problems: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    anonymous: bool = False

    def problem(self, line: str, message: str) -> None:
        self.problems.append(message)
        first = line.split("|", 1)[0].strip()
        if _JOB_ID.fullmatch(first):
            self.unreadable.add(first)
        else:
            self.anonymous = True


_JOB_ID = re.compile(r"\d+")


def parse_squeue_line(line: str) -> tuple[str, str, JobInfo, str]:
    """One squeue line in ``SQUEUE_FORMAT`` -> (job id, user, JobInfo, working folder); lines
    without the folder (the format before it was added) give ``""``."""
    fields = line.split("|", 8)
    if len(fields) not in (8, 9) or not _JOB_ID.fullmatch(fields[0].strip()):
        raise errors.SchedulerOutputError(f"unexpected squeue line {line!r}")
    workdir = fields.pop(8).strip() if len(fields) == 9 else ""
    job_id, state_s, reason, node, submit, start, end, user = (f.strip() for f in fields)
    state, alias = parse_state(state_s)
    started = parse_time(start)
    pending = state is JobState.PENDING
    return job_id, user, JobInfo(
        job_id, state, reason=_reason(reason) or alias, node=node or None,
        submit_time=parse_time(submit), start_time=None if pending else started,
        end_time=parse_time(end) if state.terminal else None,
        estimated_start=started if pending else None, evidence="squeue"), workdir


def parse_squeue(stdout: str) -> Parsed:
    """squeue output in ``SQUEUE_FORMAT`` -> Parsed {job id: (user, JobInfo)}. Each line on its
    own: one bad line costs only its own job."""
    parsed = Parsed()
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            job_id, user, info, workdir = parse_squeue_line(line)
        except errors.SchedulerOutputError as exc:
            parsed.problem(line, exc.message)
            continue
        parsed.jobs[job_id] = (user, info)
        if workdir:
            parsed.folders[job_id] = workdir
    parsed.unreadable -= parsed.jobs.keys()
    return parsed


def parse_scontrol_line(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` record -> {Key: value}; values may contain spaces."""
    marks = list(re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9/:_]*)=", line))
    fields: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        fields.setdefault(m.group(1), line[m.end():end].strip())
    return fields


def parse_scontrol_job(stdout: str) -> JobInfo:
    """``scontrol show job -o ID`` -> JobInfo (the exit code squeue cannot give)."""
    f = parse_scontrol_line(stdout.strip().splitlines()[0] if stdout.strip() else "")
    if "JobId" not in f or "JobState" not in f:
        raise errors.SchedulerOutputError(f"unexpected scontrol output {stdout[:200]!r}")
    state, alias = parse_state(f["JobState"])
    status, sig = parse_exit_code(f.get("ExitCode", "0:0"))
    return JobInfo(f["JobId"], state, reason=_reason(f.get("Reason", "")) or alias,
                   node=f.get("BatchHost") or f.get("NodeList") or None,
                   submit_time=parse_time(f.get("SubmitTime", "")),
                   start_time=parse_time(f.get("StartTime", "")),
                   end_time=parse_time(f.get("EndTime", "")),
                   exit_code=status, signal=sig, evidence="scontrol")


def parse_sacct_line(line: str) -> tuple[str, str, JobInfo, str]:
    """One ``sacct -P -X`` line in ``SACCT_FIELDS`` order -> (job id, user, JobInfo, work dir)."""
    fields = line.split("|", 9)
    if len(fields) != 10 or not _JOB_ID.fullmatch(fields[0].strip()):
        raise errors.SchedulerOutputError(f"unexpected sacct line {line!r}")
    job_id, state_s, code, node, submit, start, end, user, reason, workdir = fields
    state, alias = parse_state(state_s)
    status, sig = parse_exit_code(code)
    node = node.strip()
    if state is JobState.FAILED and status and not _reason(reason):
        reason = "NonZeroExitCode"      # what squeue says; accounting keeps no reason for it
    return job_id.strip(), user.strip(), JobInfo(
        job_id.strip(), state, reason=_reason(reason) or alias,
        node=None if node in ("", "None assigned") else node,
        submit_time=parse_time(submit), start_time=parse_time(start),
        end_time=parse_time(end), exit_code=status, signal=sig, evidence="sacct"), workdir


def parse_sacct(stdout: str, folders: Optional[Mapping[str, str]] = None) -> Parsed:
    """``sacct -P -X -D`` output -> Parsed {job id: (user, JobInfo)}, each line on its own.

    One id may have several records (ids restart after a cluster's state is reset; accounting
    keeps them all). Where the job's folder is known, only the record run in it answers: one
    run in another folder is another job's, and one with no folder yet (accounting has not seen
    that job start) cannot be told apart, so the id gets no answer this time (``unreadable``).
    Without a folder the newest record (sacct's last line) answers."""
    folders = folders or {}
    parsed = Parsed()
    undecided: set[str] = set()
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            job_id, user, info, workdir = parse_sacct_line(line)
        except errors.SchedulerOutputError as exc:
            parsed.problem(line, exc.message)
            continue
        if job_id in folders and not workdir.strip():
            undecided.add(job_id)
        elif job_id not in folders or same_folder(folders[job_id], workdir):
            parsed.jobs[job_id] = (user, info)
    parsed.unreadable |= undecided
    parsed.unreadable -= parsed.jobs.keys()
    return parsed


def classify_failure(result: Completed, action: str) -> errors.SchedulerError:
    """A failed command -> the typed error it means."""
    msg = result.message or f"exit status {result.returncode}"
    if any(s in msg for s in _UNAVAILABLE):
        return errors.SchedulerUnavailable(f"Slurm controller unreachable ({action}): {msg}")
    if result.returncode == 210 or "Access/permission denied" in msg:
        return errors.PermissionDenied(f"{action}: {msg}")
    if action == "sbatch":
        return errors.SubmitRejected(msg.removeprefix("sbatch: error: "))
    return errors.SchedulerError(f"{action} failed: {msg}")


def parse_cluster_name(text: str) -> Optional[str]:
    """``ClusterName`` from ``scontrol show config`` (``ClusterName = x``) or a slurm.conf
    (``ClusterName=x``, keys in any case); None when it is not there."""
    found = re.search(r"^\s*clustername\s*=\s*(\S+)", text, re.IGNORECASE | re.MULTILINE)
    return found.group(1) if found else None


def conf_cluster_name(env: Mapping[str, str]) -> Optional[str]:
    """The cluster's name from its slurm.conf (``$SLURM_CONF``, else /etc/slurm/slurm.conf)."""
    try:
        return parse_cluster_name(Path(env.get("SLURM_CONF") or DEFAULT_CONF).read_text())
    except OSError:
        return None


def _with_exit_details(info: JobInfo, detail: JobInfo) -> JobInfo:
    """``info`` (from squeue) completed with the exit code and end time of ``detail``."""
    return JobInfo(info.job_id, info.state, reason=info.reason, node=info.node or detail.node,
                   submit_time=info.submit_time, start_time=info.start_time,
                   end_time=info.end_time or detail.end_time, exit_code=detail.exit_code,
                   signal=detail.signal, evidence=info.evidence)


# ---------------------------------------------------------------- the backend

class SlurmCLI(Scheduler):
    name = "slurm"

    def __init__(self, command_timeout: float = 15.0, user: Optional[str] = None,
                 sacct_grace: float = SACCT_GRACE) -> None:
        self.command_timeout = command_timeout
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.sacct_grace = sacct_grace
        self._accounting: Optional[bool] = None       # detected on first need
        self._exit_codes: dict[str, JobInfo] = {}     # finished jobs: their exit details
        self._sacct_failing_since: Optional[float] = None
        self._logged: set[str] = set()                # problems already logged once
        self._owner: Optional[JobOwner] = None

    def describe(self) -> dict:
        """What the admin page shows; the owner is the one read at start-up (describing the
        backend costs the controller nothing)."""
        return {**super().describe(), "user": self.user, "accounting": self._accounting,
                "owner": self._owner.key if self._owner else None}

    def owner(self) -> JobOwner:
        """The cluster, by the controller's ``ClusterName`` (``scontrol show config``, asked
        once), else slurm.conf's."""
        if self._owner is None:
            try:
                result: Optional[Completed] = self._run(["scontrol", "show", "config"], "scontrol")
            except errors.SchedulerError:
                result = None
            name = parse_cluster_name(result.stdout) if result and result.returncode == 0 \
                else None
            self._owner = JobOwner("slurm", name or conf_cluster_name(os.environ) or "")
        return self._owner

    # -- running commands

    def _run(self, argv: list[str], action: str, env: Optional[dict[str, str]] = None) -> Completed:
        """Run one Slurm command, with a controlled environment unless ``env`` is given."""
        self.count_call(argv[0])
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  env=env if env is not None else command_environment(os.environ),
                                  timeout=self.command_timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise errors.SchedulerUnavailable(f"{argv[0]} is not installed or not on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            raise self._timeout_error(action) from exc
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def _timeout_error(self, action: str) -> errors.SchedulerError:
        """A timed-out command: ask ``scontrol ping`` (answers at once) whether slurmctld is down."""
        self.count_call("scontrol")
        try:
            ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=5,
                                  stdin=subprocess.DEVNULL, env=command_environment(os.environ))
            if "DOWN" in ping.stdout:
                return errors.SchedulerUnavailable(
                    f"Slurm controller is down ({action} gave no answer in "
                    f"{self.command_timeout:g} s): {ping.stdout.strip().splitlines()[0]}")
        except (OSError, subprocess.TimeoutExpired):
            pass
        return errors.SchedulerTimeout(f"{action} gave no answer in {self.command_timeout:g} s")

    def _log_once(self, command: str, problems: Sequence[str]) -> None:
        for problem in problems:
            if problem not in self._logged:
                if len(self._logged) > 1000:
                    self._logged.clear()
                self._logged.add(problem)
                log.warning("%s: %s; that job keeps its last known state", command, problem)

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
        result = self._run(squeue_command([j.id for j in jobs], self.user), "squeue")
        if result.returncode != 0:
            # One unknown id alone makes squeue fail; several unknown ids give empty output.
            if "Invalid job id specified" not in result.message:
                raise classify_failure(result, "squeue")
            seen = Parsed()
        else:
            seen = parse_squeue(result.stdout)
        self._log_once("squeue", seen.problems)
        answers: dict[str, JobInfo] = {}
        missing: list[Job] = []
        for job in jobs:
            listed = seen.folders.get(job.id)
            if listed and not same_folder(str(job.folder), listed):
                missing.append(job)   # another job with our id: ours has left the queue
            elif job.id in seen.jobs:
                user, info = seen.jobs[job.id]
                answers[job.id] = (self._with_exit_code(job, info) if user == self.user
                                   else _foreign(job.id, user, "squeue"))
            elif job.id not in seen.unreadable:
                missing.append(job)
        if not seen.anonymous:   # else a line we could not attribute may be any missing job's
            answers.update(self._vanished(missing))
        return answers

    def cancel(self, job: Job) -> None:
        result = self._run(["scancel", job.id], "scancel")
        if result.returncode == 0 or "Invalid job id" in result.message:
            return
        raise classify_failure(result, "scancel")

    def cancel_named(self, name: str) -> None:
        result = self._run(["scancel", "--name", name, "--user", self.user], "scancel")
        if result.returncode != 0:
            raise classify_failure(result, "scancel")

    # -- finished and vanished jobs

    def _with_exit_code(self, job: Job, info: JobInfo) -> JobInfo:
        if not info.state.terminal:
            return info
        if info.state is JobState.COMPLETED:
            return _with_exit_details(info, JobInfo(job.id, info.state, exit_code=0))
        detail = self._exit_codes.get(job.id) or exit_file_info(job)
        if detail is None and info.state is JobState.CANCELLED:
            return info   # cancelled, perhaps before it ran: no exit code worth a call
        if detail is None:
            result = self._run(["scontrol", "show", "job", "-o", job.id], "scontrol")
            if result.returncode != 0:
                return info  # purged meanwhile: the exit code stays unknown
            try:
                detail = parse_scontrol_job(result.stdout)
            except errors.SchedulerOutputError as exc:
                self._log_once("scontrol", [exc.message])
                return info
        self._exit_codes[job.id] = detail
        return _with_exit_details(info, detail)

    def _vanished(self, jobs: list[Job]) -> dict[str, JobInfo]:
        """Jobs the controller no longer knows: accounting, else the exit file, else LOST.

        Jobs whose accounting answer is missing this time (sacct failed, or printed a line we
        cannot read) get no answer, for up to ``sacct_grace`` seconds of failures in a row; then
        the exit file decides as if there were no accounting."""
        if not jobs:
            return {}
        found, unsure = Parsed(), False
        if self._accounting is not False:
            try:
                found = self._sacct(jobs)
                self._sacct_failing_since = None
            except errors.SchedulerError as exc:
                now = time.monotonic()
                self._sacct_failing_since = self._sacct_failing_since or now
                unsure = now - self._sacct_failing_since < self.sacct_grace
                self._log_once("sacct", [exc.message])
            self._log_once("sacct", found.problems)
        answers: dict[str, JobInfo] = {}
        for job in jobs:
            if job.id in found.jobs:
                user, info = found.jobs[job.id]
                answers[job.id] = info if user == self.user else _foreign(job.id, user, "sacct")
            elif not (unsure or found.anonymous or job.id in found.unreadable):
                answers[job.id] = exit_file_info(job) or JobInfo(
                    job.id, JobState.LOST, reason="gone from Slurm, no exit status left",
                    evidence="none")
        return answers

    def _sacct(self, jobs: list[Job]) -> Parsed:
        if shutil.which("sacct", path=command_environment(os.environ).get("PATH")) is None:
            self._accounting = False     # no sacct binary
            return Parsed()
        result = self._run(sacct_command([j.id for j in jobs]), "sacct")
        if result.returncode != 0:
            if "accounting storage is disabled" in result.message.lower():
                self._accounting = False
                return Parsed()
            raise classify_failure(result, "sacct")
        self._accounting = True
        return parse_sacct(result.stdout, {j.id: str(j.folder) for j in jobs})


def _foreign(job_id: str, owner: str, evidence: str) -> JobInfo:
    return JobInfo(job_id, JobState.LOST, reason=f"owned by {owner}", evidence=evidence)


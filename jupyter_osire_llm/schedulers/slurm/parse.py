"""Pure parsers of what Slurm's tools print (22.05 and newer), tested on recorded output
(``tests/data/slurm/``).

A line we cannot parse (an unknown state of a newer Slurm) costs only that job's answer: each
listing is read line by line into a ``Listing`` that says which jobs could not be read.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Mapping, Optional

from ... import errors
from ..base import JobInfo, JobState, JobUsage, PartitionInfo, StartEstimate
from .commands import Completed
from .reconcile import Listing, pick_by_folder

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
_UNAVAILABLE = ("Unable to contact slurm controller", "Connection refused", "Socket timed out",
                "Zero Bytes were transmitted", "Slurm backup controller in standby")
_JOB_ID = re.compile(r"\d+")
#: One sacct/squeue line read: (job id, user, JobInfo, working folder).
Line = tuple[str, str, JobInfo, str]


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


def _line_problem(listing: Listing, line: str, message: str) -> None:
    """A line not understood: its job's answer, or (no id to read) any missing job's, is lost."""
    first = line.split("|", 1)[0].strip()
    listing.problem(message, first if _JOB_ID.fullmatch(first) else None)


def parse_squeue_line(line: str) -> Line:
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


def parse_squeue(stdout: str) -> Listing:
    """squeue output in ``SQUEUE_FORMAT`` -> Listing {job id: (user, JobInfo)}. Each line on its
    own: one bad line costs only its own job."""
    listing = Listing("squeue")
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            job_id, user, info, workdir = parse_squeue_line(line)
        except errors.SchedulerOutputError as exc:
            _line_problem(listing, line, exc.message)
            continue
        listing.jobs[job_id] = (user, info)
        if workdir:
            listing.folders[job_id] = workdir
    listing.unreadable -= listing.jobs.keys()
    return listing


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


def parse_sacct_line(line: str) -> Line:
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


def parse_sacct(stdout: str, folders: Optional[Mapping[str, str]] = None) -> Listing:
    """``sacct -P -X -D`` output -> Listing {job id: (user, JobInfo)}, each line on its own; of
    several records of one id, the one ``pick_by_folder`` takes (one that cannot be decided yet
    leaves the id ``unreadable``)."""
    listing = Listing("sacct")
    records: list[tuple[str, str, tuple[str, JobInfo]]] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            job_id, user, info, workdir = parse_sacct_line(line)
        except errors.SchedulerOutputError as exc:
            _line_problem(listing, line, exc.message)
            continue
        records.append((job_id, workdir, (user, info)))
    listing.jobs, undecided = pick_by_folder(records, folders or {})
    listing.unreadable |= undecided
    listing.unreadable -= listing.jobs.keys()
    return listing


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


def parse_partition(text: str, partition: Optional[str]) -> Optional[PartitionInfo]:
    """``partition`` (None: the ``Default=YES`` one) in ``scontrol show partition -o`` output,
    one partition per line: its ``TotalNodes`` and ``TRESBillingWeights``."""
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if (fields.get("PartitionName") == partition) if partition else \
                fields.get("Default") == "YES":
            total = fields.get("TotalNodes", "")
            return PartitionInfo(nodes=int(total) if total.isdigit() else None,
                                 billing_weights=parse_tres(fields.get("TRESBillingWeights", "")))
    return None


_TEST_ONLY = re.compile(r"Job \d+ to start at (?P<start>\S+) using \d+ processors on nodes "
                        r"(?P<nodes>\S+) in partition (?P<partition>\S+)")


def parse_test_only(text: str) -> StartEstimate:
    """``sbatch --test-only``'s answer: "sbatch: Job 7 to start at 2026-12-04T19:05:12 using 2
    processors on nodes vm in partition debug"."""
    found = _TEST_ONLY.search(text)
    if not found:
        return StartEstimate(reason=f"Slurm gave no start time: {text.strip()[:300]!r}")
    start = parse_time(found["start"])
    return StartEstimate(start=start, nodes=found["nodes"], partition=found["partition"],
                         reason=None if start else f"Slurm's start time {found['start']!r}")


def parse_tres(text: str) -> dict[str, str]:
    """``billing=4,cpu=2,gres/gpu=1,mem=1G,node=1`` -> {name: value} (names lower-cased)."""
    return {k.strip().lower(): v.strip() for k, _, v in
            (item.partition("=") for item in text.split(",") if "=" in item)}


def parse_job_usage(stdout: str, job_id: str) -> Optional[JobUsage]:
    """``sacct -P -X --format=JobID,ElapsedRaw,AllocTRES,End`` -> the job's usage; None until
    accounting has its end (``End`` is ``Unknown`` while it runs)."""
    for line in reversed(stdout.splitlines()):      # the newest record of a reused id
        fields = line.split("|")
        if len(fields) != 4 or fields[0].strip() != job_id or not fields[1].strip().isdigit():
            continue
        if parse_time(fields[3]) is None:
            return None
        tres = parse_tres(fields[2])
        billing, gpus = tres.get("billing", ""), tres.get("gres/gpu", "")
        return JobUsage(elapsed=float(fields[1]),
                        billing=float(billing) if billing.replace(".", "", 1).isdigit() else None,
                        gpus=int(gpus) if gpus.isdigit() else None)   # gres/gpu untracked: ask the record
    return None

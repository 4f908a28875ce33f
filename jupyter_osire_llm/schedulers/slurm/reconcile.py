"""What a Slurm backend answers for its jobs, from the live listing and, for jobs gone from it,
accounting: the rules both Slurm backends (the CLI and pyslurm) share.

A backend supplies only what its transport reads: the live listing of the jobs asked about,
and "accounting records for these ids" (sacct, ``pyslurm.db``), both as a ``Listing``. The rules:

- a job listed in another folder is not ours: ids restart when a cluster's state is reset, so
  ours has left the queue (the same-folder rule, ``pick_by_folder``, decides accounting too);
- a job of another user is answered LOST, "owned by <user>";
- a job gone from the live listing is answered from accounting, else from its exit file, else
  LOST; while accounting fails (up to ``grace`` seconds in a row) such jobs get no answer, so the
  caller keeps their last state; a cluster without accounting is asked once;
- a line or record that cannot be read costs only its own job's answer this time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence, TypeVar

from ... import errors
from ..base import Job, JobInfo, JobState, exit_file_info, same_folder

#: Seconds a failing accounting query may keep purged jobs unanswered before the exit file
#: decides alone.
ACCOUNTING_GRACE = 120.0

T = TypeVar("T")
#: "Accounting records for these ids": a Listing; None when the cluster keeps no accounting;
#: raises ``SchedulerError`` when the query failed this time.
AccountingQuery = Callable[[list[Job]], Optional["Listing"]]
#: Completes a finished job's live answer (the CLI adds the exit code squeue cannot give).
Finish = Callable[[Job, JobInfo], JobInfo]
#: Logs problems (each once); the backend says how.
Log = Callable[[Sequence[str]], None]


@dataclass
class Listing:
    """A listing (live queue or accounting) as far as it could be read: the jobs whose entry was
    read (id -> (user, JobInfo)), and what was not. ``unreadable`` holds the ids of jobs whose
    entry is there but not understood; ``anonymous`` says an entry could not even be attributed
    to a job id (any job missing from ``jobs`` may then be that one). ``source`` is the evidence
    named in answers about other users' jobs."""

    source: str
    jobs: dict[str, tuple[str, JobInfo]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)   # id -> working folder, where listed
    problems: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    anonymous: bool = False

    def problem(self, message: str, job_id: Optional[str]) -> None:
        self.problems.append(message)
        if job_id is None:
            self.anonymous = True
        else:
            self.unreadable.add(job_id)


def pick_by_folder(records: Iterable[tuple[str, str, T]],
                   folders: Mapping[str, str]) -> tuple[dict[str, T], set[str]]:
    """Accounting records ``(job id, working folder, record)``, oldest first -> the record per id
    that is the job's, and the ids that cannot be decided this time.

    One id may have several records (ids restart after a cluster's state is reset; accounting
    keeps them all). Where the job's folder is known, only the record run in it answers: one run
    in another folder is another job's, and one with no folder yet (accounting has not seen that
    job start) cannot be told apart. Without a folder the newest record answers."""
    chosen: dict[str, T] = {}
    undecided: set[str] = set()
    for job_id, workdir, record in records:
        if job_id in folders and not workdir.strip():
            undecided.add(job_id)
        elif job_id not in folders or same_folder(folders[job_id], workdir):
            chosen[job_id] = record
    return chosen, undecided - chosen.keys()


def foreign(job_id: str, owner: str, evidence: str) -> JobInfo:
    """The answer for a job id that another user's job holds."""
    return JobInfo(job_id, JobState.LOST, reason=f"owned by {owner}", evidence=evidence)


def _as_listed(job: Job, info: JobInfo) -> JobInfo:
    return info


class Reconciler:
    """The answers of one Slurm backend for ``user``'s jobs; remembers whether the cluster keeps
    accounting (``accounting``: None until asked) and since when its query fails."""

    def __init__(self, user: str, accounting: AccountingQuery, log: Log,
                 grace: float = ACCOUNTING_GRACE, finish: Finish = _as_listed) -> None:
        self.user = user
        self.grace = grace
        self.accounting: Optional[bool] = None
        self._query_accounting = accounting
        self._log = log
        self._finish = finish
        self._failing_since: Optional[float] = None

    def answers(self, jobs: Sequence[Job], live: Listing) -> dict[str, JobInfo]:
        """An answer per job the live listing or accounting could give (see the module)."""
        answers: dict[str, JobInfo] = {}
        missing: list[Job] = []
        for job in jobs:
            listed = live.folders.get(job.id)
            if listed and not same_folder(str(job.folder), listed):
                missing.append(job)   # another job with our id: ours has left the queue
            elif job.id in live.jobs:
                user, info = live.jobs[job.id]
                answers[job.id] = (self._finish(job, info) if user == self.user
                                   else foreign(job.id, user, live.source))
            elif job.id not in live.unreadable:
                missing.append(job)
        if not live.anonymous:   # else an entry we could not attribute may be any missing job's
            answers.update(self.vanished(missing))
        return answers

    def vanished(self, jobs: list[Job]) -> dict[str, JobInfo]:
        """Jobs the controller no longer knows: accounting, else the exit file, else LOST."""
        if not jobs:
            return {}
        found, unsure = Listing("accounting"), False
        if self.accounting is not False:
            try:
                listing = self._query_accounting(jobs)
                self._failing_since = None
            except errors.SchedulerError as exc:
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                unsure = now - self._failing_since < self.grace
                self._log([exc.message])
            else:
                self.accounting = listing is not None
                found = listing or found
            self._log(found.problems)
        answers: dict[str, JobInfo] = {}
        for job in jobs:
            if job.id in found.jobs:
                user, info = found.jobs[job.id]
                answers[job.id] = info if user == self.user else foreign(job.id, user,
                                                                         found.source)
            elif not (unsure or found.anonymous or job.id in found.unreadable):
                answers[job.id] = exit_file_info(job) or JobInfo(
                    job.id, JobState.LOST, reason="gone from Slurm, no exit status left",
                    evidence="none")
        return answers


def with_exit_details(info: JobInfo, detail: JobInfo) -> JobInfo:
    """``info`` (from the live listing) completed with the exit code and end time of ``detail``."""
    return JobInfo(info.job_id, info.state, reason=info.reason, node=info.node or detail.node,
                   submit_time=info.submit_time, start_time=info.start_time,
                   end_time=info.end_time or detail.end_time, exit_code=detail.exit_code,
                   signal=detail.signal, evidence=info.evidence)


class ExitDetails:
    """Exit codes of finished jobs that the live listing shows without one: from the job's exit
    file, else asked once of the backend (``ask``: None when it has no answer); remembered."""

    def __init__(self, ask: Callable[[Job], Optional[JobInfo]]) -> None:
        self._ask = ask
        self._known: dict[str, JobInfo] = {}

    def complete(self, job: Job, info: JobInfo) -> JobInfo:
        if not info.state.terminal:
            return info
        if info.state is JobState.COMPLETED:
            return with_exit_details(info, JobInfo(job.id, info.state, exit_code=0))
        detail = self._known.get(job.id) or exit_file_info(job)
        if detail is None and info.state is JobState.CANCELLED:
            return info   # cancelled, perhaps before it ran: no exit code worth a call
        if detail is None:
            detail = self._ask(job)
            if detail is None:
                return info
        self._known[job.id] = detail
        return with_exit_details(info, detail)

"""Slurm through pyslurm's 25.11 API (``JobSubmitDescription``, ``Job``, ``Jobs``).

pyslurm builds only against the exactly matching Slurm release, so it is imported lazily and a
missing or broken pyslurm is ``SchedulerUnavailable``. Same semantics as the CLI backend: foreign
jobs answered as LOST ("owned by ..."), jobs gone from the controller answered from accounting
(``pyslurm.db.Jobs.load`` filtered by id and user: sacct), else their exit file, else LOST.

Asking only for this user's jobs: pyslurm 25.11 has no binding of slurm_load_job_user.
``pyslurm.Jobs.load()`` (slurm_load_jobs) always makes the controller pack its whole job table;
``pyslurm.Job.load(id)`` (slurm_load_job) packs one job. A cycle therefore loads each job by id
while there are at most ``single_load_limit`` of them (the usual case: a few replicas), and the
whole table once beyond that: at most ``single_load_limit`` small calls or one large one.
"""
from __future__ import annotations

import logging
import os
import pwd
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

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
    exit_file_info,
    job_environment,
    same_folder,
    with_exit_trap,
)
from .cli import SACCT_GRACE, conf_cluster_name, parse_state

log = logging.getLogger(__name__)
#: Jobs loaded one by one (slurm_load_job) per cycle; more than this: one slurm_load_jobs.
SINGLE_LOAD_LIMIT = 8


def import_pyslurm() -> ModuleType:
    try:
        import pyslurm  # type: ignore[import-not-found]
    except Exception as exc:   # ImportError, or a build for another Slurm failing to load
        raise errors.SchedulerUnavailable(f"pyslurm is not usable: {exc}") from exc
    return pyslurm


def submit_description(request: JobRequest, script: str, env: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for ``pyslurm.JobSubmitDescription`` (pure, testable without pyslurm)."""
    res: Resources = request.resources
    desc: dict[str, Any] = {
        "name": request.name, "script": script, "working_directory": str(request.folder),
        "standard_output": str(request.folder / OUTPUT_FILE), "environment": env,
        "nodes": res.nodes,
    }
    if res.gpus:
        desc["gres_per_node"] = (f"gpu:{res.gpu_type}:{res.gpus}" if res.gpu_type
                                 else f"gpu:{res.gpus}")
    optional = {"cpus_per_task": res.cpus, "memory_per_node": res.memory,
                "time_limit": res.time, "partitions": res.partition, "account": res.account,
                "qos": res.qos, "constraints": res.constraint}
    desc.update({k: v for k, v in optional.items() if v is not None})
    return desc


def _epoch(value: Any) -> Optional[float]:
    return float(value) if value else None


#: An accounting record that may or may not be the job's (see ``_accounting_records``).
_UNDECIDED = object()


def info_from_db_job(job: Any) -> JobInfo:
    """A ``pyslurm.db.Job`` (accounting: a job the controller has purged) -> JobInfo."""
    state, alias = parse_state(str(job.state))
    reason = job.state_reason if job.state_reason not in (None, "None") else alias
    return JobInfo(str(job.id), state, reason=reason, node=job.nodelist or None,
                   submit_time=_epoch(job.submit_time), start_time=_epoch(job.start_time),
                   end_time=_epoch(job.end_time) if state.terminal else None,
                   exit_code=job.exit_code if state.terminal else None,
                   signal=(job.exit_code_signal or None) if state.terminal else None,
                   evidence="pyslurm.db")


def info_from_job(job: Any) -> JobInfo:
    """A ``pyslurm.Job`` -> JobInfo."""
    state, alias = parse_state(str(job.state))
    reason = job.state_reason if job.state_reason not in (None, "None") else alias
    pending = state is JobState.PENDING
    start = _epoch(job.start_time)
    ended = state.terminal
    return JobInfo(str(job.id), state, reason=reason,
                   node=job.batch_host or job.allocated_nodes or None,
                   submit_time=_epoch(job.submit_time), start_time=None if pending else start,
                   end_time=_epoch(job.end_time) if ended else None,
                   estimated_start=start if pending else None,
                   exit_code=job.exit_code if ended else None,
                   signal=(job.exit_code_signal or None) if ended else None, evidence="pyslurm")


class PySlurm(Scheduler):
    name = "pyslurm"

    def __init__(self, user: Optional[str] = None, single_load_limit: int = SINGLE_LOAD_LIMIT,
                 accounting_grace: float = SACCT_GRACE) -> None:
        self.pyslurm = import_pyslurm()
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.single_load_limit = single_load_limit
        self.accounting_grace = accounting_grace
        self._accounting: Optional[bool] = None
        self._failing_since: Optional[float] = None
        self._logged: set[str] = set()
        self._owner: Optional[JobOwner] = None

    def describe(self) -> dict:
        return {**super().describe(), "user": self.user, "accounting": self._accounting}

    def owner(self) -> JobOwner:
        """The cluster (the controller's configuration through pyslurm, else slurm.conf), read
        once; "slurm" like the CLI backend: both see the same jobs."""
        if self._owner is None:
            try:
                self.count_call("Config.load")
                name = str(self.pyslurm.slurmctld.Config.load().cluster_name or "")
            except Exception:   # an older pyslurm, a controller that does not answer
                name = ""
            self._owner = JobOwner("slurm", name or conf_cluster_name(os.environ) or "")
        return self._owner

    def _call(self, action: str, what: str, fn: Any, *args: Any) -> Any:
        self.count_call(what)
        try:
            return fn(*args)
        except self.pyslurm.RPCError as exc:
            raise _translate(action, str(exc)) from exc

    def submit(self, request: JobRequest) -> Job:
        request.folder.mkdir(parents=True, exist_ok=True)
        script = with_exit_trap(request.script, request.folder)
        (request.folder / SCRIPT_FILE).write_text(script)
        env = job_environment(os.environ, request.env)
        try:
            desc = self.pyslurm.JobSubmitDescription(**submit_description(request, script, env))
        except (ValueError, TypeError) as exc:
            raise errors.SubmitRejected(str(exc)) from exc
        return Job(str(self._call("submit", "JobSubmitDescription.submit", desc.submit)),
                   request.folder)

    def _load(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """The controller's records of ``jobs`` (absent: it does not know them)."""
        if len(jobs) > self.single_load_limit:
            loaded = self._call("query", "Jobs.load", self.pyslurm.Jobs.load)
            return {str(j.id): j for j in loaded.values()}
        known = {}
        for job in jobs:
            self.count_call("Job.load")
            try:
                known[job.id] = self.pyslurm.Job.load(int(job.id))
            except self.pyslurm.RPCError as exc:
                if "Invalid job id" not in str(exc):
                    raise _translate("query", str(exc)) from exc
        return known

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if not jobs:
            return {}
        known = self._load(jobs)
        answers: dict[str, JobInfo] = {}
        missing: list[Job] = []
        for job in jobs:
            found = known.get(job.id)
            listed = str(getattr(found, "working_directory", None) or "")
            if found is None or (listed and not same_folder(str(job.folder), listed)):
                missing.append(job)   # gone, or another job has its id now
            elif found.user_name != self.user:
                answers[job.id] = JobInfo(job.id, JobState.LOST,
                                          reason=f"owned by {found.user_name}", evidence="pyslurm")
            else:
                try:
                    answers[job.id] = info_from_job(found)
                except errors.SchedulerOutputError as exc:   # a state newer than our table
                    self._log_once(exc.message)
        answers.update(self._vanished(missing))
        return answers

    def _vanished(self, jobs: list[Job]) -> dict[str, JobInfo]:
        """Jobs the controller no longer knows: accounting, else the exit file, else LOST. While
        accounting fails (up to ``accounting_grace`` s in a row) they get no answer: the caller
        keeps their last state."""
        if not jobs:
            return {}
        found: dict[str, Any] = {}
        if self._accounting is not False:
            try:
                found = self._accounting_records(jobs)
                self._failing_since = None
            except Exception as exc:   # RPCError (slurmdbd down...), or no accounting at all
                if isinstance(exc, AttributeError) or "disabled" in str(exc).lower():
                    self._accounting = False
                else:
                    now = time.monotonic()
                    self._failing_since = self._failing_since or now
                    self._log_once(f"accounting query failed: {exc}")
                    if now - self._failing_since < self.accounting_grace:
                        return {}
        answers: dict[str, JobInfo] = {}
        for job in jobs:
            record = found.get(job.id)
            if record is _UNDECIDED:   # a record with no folder yet: no answer this time
                continue
            if record is not None:
                try:
                    answers[job.id] = (info_from_db_job(record) if record.user_name == self.user
                                       else JobInfo(job.id, JobState.LOST,
                                                    reason=f"owned by {record.user_name}",
                                                    evidence="pyslurm.db"))
                except errors.SchedulerOutputError as exc:
                    self._log_once(exc.message)
                continue
            answers[job.id] = exit_file_info(job) or JobInfo(
                job.id, JobState.LOST, reason="gone from Slurm, no exit status left",
                evidence="none")
        return answers

    def _accounting_records(self, jobs: list[Job]) -> dict[str, Any]:
        """One slurmdbd query for the purged jobs, of this user only; per id, the record run in
        the job's folder (ids restart after a reset of the cluster: a record run elsewhere is
        another job's and is left out; one with no folder yet is ``_UNDECIDED``)."""
        self.count_call("db.Jobs.load")
        db = self.pyslurm.db
        records = db.Jobs.load(db.JobFilter(ids=[int(j.id) for j in jobs], users=[self.user]))
        self._accounting = True
        folders = {j.id: str(j.folder) for j in jobs}
        chosen: dict[str, Any] = {}
        for record in records:
            job_id = str(record.id)
            workdir = str(record.working_directory or "")
            if job_id not in folders or (workdir and same_folder(folders[job_id], workdir)):
                chosen[job_id] = record
            elif not workdir:   # accounting has not seen it start: ours, or the id's new job
                chosen.setdefault(job_id, _UNDECIDED)
        return chosen

    def cancel(self, job: Job) -> None:
        self.count_call("Job.cancel")
        try:
            self.pyslurm.Job(int(job.id)).cancel()
        except self.pyslurm.RPCError as exc:
            if "Invalid job id" in str(exc) or "already completed" in str(exc):
                return
            raise _translate("cancel", str(exc)) from exc

    def cancel_named(self, name: str) -> None:
        loaded = self._call("query", "Jobs.load", self.pyslurm.Jobs.load)
        for found in loaded.values():
            if found.name == name and found.user_name == self.user \
                    and not parse_state(str(found.state))[0].terminal:
                self.cancel(Job(str(found.id), Path(str(found.working_directory or "."))))

    def _log_once(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.warning("pyslurm: %s; the job keeps its last known state", message)


def _translate(action: str, message: str) -> errors.SchedulerError:
    if "Unable to contact slurm controller" in message or "Connection refused" in message:
        return errors.SchedulerUnavailable(f"Slurm controller unreachable ({action}): {message}")
    if "Access/permission denied" in message:
        return errors.PermissionDenied(f"{action}: {message}")
    if "timed out" in message.lower():
        return errors.SchedulerTimeout(f"{action}: {message}")
    if action == "submit":
        return errors.SubmitRejected(message)
    return errors.SchedulerError(f"{action} failed: {message}")

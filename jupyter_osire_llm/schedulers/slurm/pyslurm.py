"""Slurm through pyslurm's 25.11 API (``JobSubmitDescription``, ``Job``, ``Jobs``).

pyslurm builds only against the exactly matching Slurm release, so it is imported lazily and a
missing or broken pyslurm is ``SchedulerUnavailable``. The answers follow the same rules as the
CLI backend's (``reconcile``); this module supplies the live records and the accounting records
(``pyslurm.db.Jobs.load`` filtered by id and user: sacct).

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
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Optional, Sequence

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
    job_environment,
    same_folder,
    with_exit_trap,
)
from .parse import conf_cluster_name, parse_state
from .reconcile import ACCOUNTING_GRACE, Listing, Reconciler, foreign, pick_by_folder

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
                 accounting_grace: float = ACCOUNTING_GRACE) -> None:
        self.pyslurm = import_pyslurm()
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.single_load_limit = single_load_limit
        self._logged: set[str] = set()
        self._owner: Optional[JobOwner] = None
        self.reconciler = Reconciler(self.user, self._accounting_records, log=self._log_once,
                                     grace=accounting_grace)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "user": self.user,
                "accounting": self.reconciler.accounting}

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

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if not jobs:
            return {}
        return self.reconciler.answers(jobs, self._live(jobs))

    # -- what the reconciliation asks of Slurm

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

    def _live(self, jobs: Sequence[Job]) -> Listing:
        """The live listing of ``jobs``, from the controller's records."""
        known = self._load(jobs)
        listing = Listing("pyslurm")
        for job in jobs:
            record = known.get(job.id)
            if record is None:
                continue
            listed = str(getattr(record, "working_directory", None) or "")
            if listed:
                listing.folders[job.id] = listed
                if not same_folder(str(job.folder), listed):
                    continue   # another job's, not read: the reconciler takes ours as gone
            self._read(listing, job.id, record, info_from_job)
        self._log_once(listing.problems)
        return listing

    def _accounting_records(self, jobs: list[Job]) -> Optional[Listing]:
        """One slurmdbd query for the purged jobs, of this user only; per id, the record run in
        the job's folder (``pick_by_folder``). None: this cluster keeps no accounting."""
        try:
            self.count_call("db.Jobs.load")
            db = self.pyslurm.db
            records = db.Jobs.load(db.JobFilter(ids=[int(j.id) for j in jobs], users=[self.user]))
            chosen, undecided = pick_by_folder(_by_folder(records),
                                               {j.id: str(j.folder) for j in jobs})
        except Exception as exc:   # RPCError (slurmdbd down...), or no accounting at all
            if isinstance(exc, AttributeError) or "disabled" in str(exc).lower():
                return None
            raise errors.SchedulerError(f"accounting query failed: {exc}") from exc
        listing = Listing("pyslurm.db", unreadable=undecided)
        for job_id, record in chosen.items():
            self._read(listing, job_id, record, info_from_db_job)
        return listing

    def _read(self, listing: Listing, job_id: str, record: Any,
              read: Callable[[Any], JobInfo]) -> None:
        """One record into ``listing``; another user's is not read, only named."""
        user = record.user_name
        try:
            info = read(record) if user == self.user else foreign(job_id, user, listing.source)
        except errors.SchedulerOutputError as exc:   # a state newer than our table
            listing.problem(exc.message, job_id)
            return
        listing.jobs[job_id] = (user, info)

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

    def _log_once(self, problems: Sequence[str]) -> None:
        for message in problems:
            if message not in self._logged:
                self._logged.add(message)
                log.warning("pyslurm: %s; the job keeps its last known state", message)


def _by_folder(records: Iterable[Any]) -> Iterable[tuple[str, str, Any]]:
    """Accounting records as ``pick_by_folder`` takes them."""
    return ((str(r.id), str(r.working_directory or ""), r) for r in records)


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

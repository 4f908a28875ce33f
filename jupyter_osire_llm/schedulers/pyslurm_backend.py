"""Slurm through pyslurm's 25.11 API (``JobSubmitDescription``, ``Job``, ``Jobs``).

pyslurm builds only against the exactly matching Slurm release, so it is imported lazily and a
missing or broken pyslurm is ``SchedulerUnavailable``. Same semantics as the CLI backend: one
``Jobs.load()`` per query cycle, foreign jobs answered as LOST ("owned by ..."), jobs gone from the
controller answered from their exit file or as LOST with evidence "none".
"""
from __future__ import annotations

import os
import pwd
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

from .. import errors
from .base import (OUTPUT_FILE, SCRIPT_FILE, Job, JobInfo, JobRequest, JobState, Resources,
                   Scheduler, exit_file_info, job_environment, with_exit_trap)
from .slurm import parse_state


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

    def __init__(self, user: Optional[str] = None) -> None:
        self.pyslurm = import_pyslurm()
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name

    def _call(self, action: str, fn: Any, *args: Any) -> Any:
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
        return Job(str(self._call("submit", desc.submit)), request.folder)

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if not jobs:
            return {}
        loaded = self._call("query", self.pyslurm.Jobs.load)
        known = {str(j.id): j for j in loaded.values()}
        answers: dict[str, JobInfo] = {}
        for job in jobs:
            found = known.get(job.id)
            if found is None:
                answers[job.id] = exit_file_info(job) or JobInfo(
                    job.id, JobState.LOST, reason="gone from Slurm, no exit status left",
                    evidence="none")
            elif found.user_name != self.user:
                answers[job.id] = JobInfo(job.id, JobState.LOST,
                                          reason=f"owned by {found.user_name}", evidence="pyslurm")
            else:
                answers[job.id] = info_from_job(found)
        return answers

    def cancel(self, job: Job) -> None:
        try:
            self.pyslurm.Job(int(job.id)).cancel()
        except self.pyslurm.RPCError as exc:
            if "Invalid job id" in str(exc) or "already completed" in str(exc):
                return
            raise _translate("cancel", str(exc)) from exc

    def cancel_named(self, name: str) -> None:
        loaded = self._call("query", self.pyslurm.Jobs.load)
        for found in loaded.values():
            if found.name == name and found.user_name == self.user \
                    and not parse_state(str(found.state))[0].terminal:
                self.cancel(Job(str(found.id), Path(str(found.working_directory or "."))))


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

"""Local processes standing in for Slurm where there is none: the embedded default.

Each job gets a detached runner (``_local_runner``, its own session) that waits for free fake GPU
slots (PENDING, reason Resources), runs the script in a new process group (RUNNING), enforces the
time limit (TIMEOUT) and records everything as JSON in the job folder. A new ``LocalScheduler``
(after a server restart) answers from those files alone.

Pids are recorded with what identifies their process (its start time in /proc/<pid>/stat and the
boot id): after a reboot, or once a pid is reused, a stale record never lets us signal a stranger.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .. import errors
from .base import (
    SCRIPT_FILE,
    Job,
    JobInfo,
    JobOwner,
    JobRequest,
    JobState,
    JobUsage,
    PartitionInfo,
    Scheduler,
    exit_file_info,
    job_environment,
    with_exit_trap,
)

STATE_FILE = "local_job.json"
CANCEL_FILE = "local_cancel"
RUNNER_LOG = "local_runner.log"
COUNTER_FILE = "next_job_id"
RUNNER_START_GRACE = 30.0
JOB_PYTHONPATH = "OSIRE_JOB_PYTHONPATH"


_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
#: seconds per field, by (has days, number of fields): Slurm's M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME_UNITS = {(False, 1): (60,), (False, 2): (60, 1), (False, 3): (3600, 60, 1),
               (True, 1): (3600,), (True, 2): (3600, 60), (True, 3): (3600, 60, 1)}


def parse_time_limit(text: Optional[str]) -> Optional[float]:
    """Slurm's --time syntax -> seconds; None, 0, UNLIMITED -> no limit."""
    if text is None or text.strip() in ("", "0", "UNLIMITED", "INFINITE"):
        return None
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise errors.RequestError(f"invalid time limit {text!r}", field="time")
    days, *rest = m.groups()
    parts = [int(p) for p in rest if p is not None]
    units = _TIME_UNITS[(days is not None, len(parts))]
    return float(int(days or 0) * 86400 + sum(p * u for p, u in zip(parts, units)))


def read_state(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_state(folder: Path, state: dict) -> None:
    """Atomic: readers never see half a file."""
    tmp = folder / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / STATE_FILE)


def boot_id() -> Optional[str]:
    """This boot's random id (Linux): pids and start times of another boot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> Optional[list[str]]:
    """Fields 3... of /proc/<pid>/stat (after "pid (comm)"), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> Optional[int]:
    """When the process started, in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def identity(pid: int) -> dict:
    """What tells this process from a later one with the same pid: recorded beside the pid."""
    return {"start": process_start(pid), "boot": boot_id()}


def same_process(pid: Optional[int], recorded: Optional[dict]) -> bool:
    """``pid`` is still the process ``recorded`` (by ``identity``) described."""
    if not pid or not recorded or recorded.get("start") is None or not recorded.get("boot"):
        return False
    return recorded["boot"] == boot_id() and process_start(pid) == recorded["start"]


def runner_alive(state: dict) -> bool:
    """The runner recorded in ``state`` still runs (its identity, else its cmdline, confirms it
    against pid reuse)."""
    pid = state.get("runner_pid")
    if not pid:  # not started yet, unless it failed to start at all
        return time.time() - float(state.get("submit_time", 0)) < RUNNER_START_GRACE
    if "runner_identity" in state and not same_process(pid, state["runner_identity"]):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"_local_runner" in cmdline and str(state["folder"]).encode() in cmdline


def job_processes(state: dict) -> list[int]:
    """The live processes of the job recorded in ``state``: its process group, only once its
    identity is confirmed. With the group leader alive, the leader must be the recorded process;
    with the leader gone, a member counts only if it started after the job (same boot) and
    carries the job's OSIRE_JOB_ID. A record without identity (or from another boot) gives []."""
    pgid, recorded = state.get("job_pgid"), state.get("job_identity")
    if not pgid or not recorded or recorded.get("start") is None \
            or recorded.get("boot") != boot_id():
        return []
    leader = _stat(pgid)
    if leader is not None and not same_process(pgid, recorded):
        return []                       # the pgid is someone else's now
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is None or int(fields[2]) != pgid or int(fields[19]) < recorded["start"]:
            continue
        if leader is None and not _carries_job_id(int(entry), str(state.get("id"))):
            continue
        members.append(int(entry))
    return members


def _carries_job_id(pid: int, job_id: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"OSIRE_JOB_ID={job_id}".encode() in environ


def info_from_state(job: Job, state: dict) -> JobInfo:
    return JobInfo(job.id, JobState(state["state"]), reason=state.get("reason"),
                   node=state.get("node"), submit_time=state.get("submit_time"),
                   start_time=state.get("start_time"), end_time=state.get("end_time"),
                   exit_code=state.get("exit_code"), signal=state.get("signal"), evidence="local")


class LocalScheduler(Scheduler):
    name = "local"

    def partition_info(self, partition: Optional[str]) -> Optional[PartitionInfo]:
        return PartitionInfo(nodes=1)    # this machine

    def job_usage(self, job: Job) -> Optional[JobUsage]:
        """Elapsed time from the job's own record; no billing, GPUs from the record's request."""
        info = self.query([job]).get(job.id)
        if info is None or not info.state.terminal or info.start_time is None or \
                info.end_time is None:
            return None
        return JobUsage(elapsed=max(0.0, info.end_time - info.start_time))

    def __init__(self, state_dir: Path, gpus: int = 0, cpus: Optional[int] = None,
                 kill_grace: float = 5.0) -> None:
        self.state_dir = Path(state_dir)
        self.gpus = gpus
        self.cpus = cpus
        self.kill_grace = kill_grace
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def describe(self) -> dict:
        return {**super().describe(), "gpus": self.gpus, "cpus": self.cpus,
                "state_dir": str(self.state_dir)}

    def owner(self) -> JobOwner:
        """This machine: another login node's processes cannot be seen or signalled from here
        (its boot id stays in each job's state, which tells a job of an earlier boot)."""
        return JobOwner(self.name, hostname())

    def _next_id(self) -> str:
        with open(self.state_dir / COUNTER_FILE, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            current = int(f.read().strip() or "0") + 1
            f.seek(0)
            f.truncate()
            f.write(str(current))
        return str(current)

    def _check(self, request: JobRequest) -> None:
        res = request.resources
        if res.gpus > self.gpus:
            raise errors.SubmitRejected(
                f"Requested node configuration is not available: {res.gpus} GPUs asked, "
                f"this machine has {self.gpus}")
        if self.cpus is not None and (res.cpus or 1) > self.cpus:
            raise errors.SubmitRejected(
                f"Requested node configuration is not available: {res.cpus} CPUs asked, "
                f"this machine has {self.cpus}")

    def submit(self, request: JobRequest) -> Job:
        self._check(request)
        limit = parse_time_limit(request.resources.time)
        folder = request.folder
        folder.mkdir(parents=True, exist_ok=True)
        # A folder can run a second job (a batch's resume): an earlier job's cancel is not its.
        (folder / CANCEL_FILE).unlink(missing_ok=True)
        (folder / SCRIPT_FILE).write_text(with_exit_trap(request.script, folder))
        (folder / SCRIPT_FILE).chmod(0o700)
        job = Job(self._next_id(), folder)
        write_state(folder, {
            "id": job.id, "folder": str(folder), "state": JobState.PENDING.value, "reason": None,
            "submit_time": time.time(), "node": None, "gpus": request.resources.gpus,
            "cpus": request.resources.cpus or 1, "time_limit": limit,
            "state_dir": str(self.state_dir), "total_gpus": self.gpus, "total_cpus": self.cpus,
            "kill_grace": self.kill_grace, "name": request.name})
        env = runner_environment(job_environment(os.environ, request.env))
        self.count_call("runner")            # no scheduler: what we count is our own work
        try:
            with open(folder / RUNNER_LOG, "ab") as log:
                subprocess.Popen([sys.executable, "-m", "jupyter_osire_llm.schedulers._local_runner",
                                  str(folder)], start_new_session=True, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, env=env, cwd=folder)
        except OSError as exc:
            raise errors.SchedulerUnavailable(f"cannot start the local job runner: {exc}") from exc
        return job

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        if jobs:
            self.count_call("query")
        return {job.id: self._query_one(job) for job in jobs}

    def _query_one(self, job: Job) -> JobInfo:
        state = read_state(job.folder)
        if state is None or state.get("id") != job.id:
            return exit_file_info(job) or JobInfo(job.id, JobState.LOST,
                                                  reason="no local job record", evidence="none")
        info = info_from_state(job, state)
        if info.state.terminal or runner_alive(state):
            return info
        return exit_file_info(job) or JobInfo(
            job.id, JobState.LOST, reason="local runner died", node=info.node,
            submit_time=info.submit_time, start_time=info.start_time, evidence="none")

    def cancel(self, job: Job) -> None:
        self.count_call("cancel")
        state = read_state(job.folder)
        if state is None or state.get("id") != job.id or JobState(state["state"]).terminal:
            return
        try:
            (job.folder / CANCEL_FILE).touch()
        except PermissionError as exc:
            raise errors.PermissionDenied(f"job {job.id} is not yours") from exc
        pid = state.get("runner_pid")
        if pid and runner_alive(state):
            _signal(pid, signal.SIGTERM, job.id)
        elif pid:
            # the runner is gone but its job may live on: end its processes ourselves, once
            # the record is confirmed to still describe them (never a reused pid's group)
            for member in job_processes(state):
                _signal(member, signal.SIGKILL, job.id)


def runner_environment(job_env: dict[str, str]) -> dict[str, str]:
    """The runner must import this package even when it is not installed (a source checkout);
    the job gets its own PYTHONPATH back (``JOB_PYTHONPATH``), never ours."""
    env = dict(job_env)
    env[JOB_PYTHONPATH] = job_env.get("PYTHONPATH", "")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env[JOB_PYTHONPATH]) if p)
    return env


def job_env_from_runner(runner_env: dict[str, str]) -> dict[str, str]:
    env = dict(runner_env)
    original = env.pop(JOB_PYTHONPATH, "")
    if original:
        env["PYTHONPATH"] = original
    else:
        env.pop("PYTHONPATH", None)
    return env


def _signal(pid: int, sig: int, job_id: str) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise errors.PermissionDenied(f"job {job_id} is not yours") from exc


def hostname() -> str:
    return socket.gethostname().split(".")[0]

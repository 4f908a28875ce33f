"""The scheduler interface every backend implements (slurm CLI, pyslurm, local).

A backend is small and synchronous, like submitit's executors: it turns a ``JobRequest`` into a
job, answers for many jobs in one call, and cancels. Callers in the async server run it in a
thread. Backends raise only ``SchedulerError`` subclasses (see ``errors.py``).
"""
from __future__ import annotations

import abc
import enum
import os
import re
import shlex
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..errors import RequestError

#: Written by every job (the backend arranges it) when its script exits: the exit status.
EXIT_FILE = "exit_status"
#: The job's combined stdout/stderr, in its folder.
OUTPUT_FILE = "job.log"
#: The batch script as submitted (with the exit trap), in its folder.
SCRIPT_FILE = "job.sh"
#: Variables never handed on to a job (nor to a scheduler command): the Jupyter server's own
#: credentials and session (JupyterHub's API token and URLs, the Jupyter token, the `jupyter osire`
#: client's OSIRE_URL/OSIRE_TOKEN and any other OSIRE_*KEY/TOKEN/SECRET/PASSWORD, Open OnDemand's
#: session password).
SECRET_ENV = re.compile(
    r"^(JUPYTERHUB_.*|JPY_.*|JUPYTER_(TOKEN|SERVER_TOKEN|SERVER_URL|PASSWORD)"
    r"|OSIRE_(URL|TOKEN|.*(TOKEN|KEY|SECRET|PASSWORD|PASSWD))|password|PASSWORD)$")
#: Slurm's input variables: options of sbatch/squeue/sacct/... and the environment of an enclosing
#: job (a Jupyter server that runs inside a Slurm job, as under Open OnDemand). They change what
#: the commands print and what a submission asks for, so neither our commands nor our jobs inherit
#: them. SLURM_CONF (where the cluster's configuration is) is the one kept.
SLURM_ENV = re.compile(r"^(SLURM_(?!CONF$)|SBATCH_|SALLOC_|SRUN_|SQUEUE_|SACCT_|SACCTMGR_|"
                       r"SCONTROL_|SCANCEL_|SINFO_|SPRIO_|SSTAT_|SREPORT_|SCRUN_|PMI_|PMIX_)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CALLS_LOCK = threading.Lock()


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    #: Gone from the scheduler with no evidence of how it ended.
    LOST = "LOST"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING, JobState.COMPLETING)


@dataclass(frozen=True)
class Resources:
    """What a job asks the scheduler for. Validated before it gets here."""

    gpus: int = 0
    gpu_type: Optional[str] = None
    cpus: Optional[int] = None
    memory: Optional[str] = None          # Slurm syntax: 64G, 4000M
    time: Optional[str] = None            # Slurm syntax: minutes, HH:MM:SS, D-HH:MM:SS
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    nodes: int = 1


@dataclass(frozen=True)
class JobRequest:
    """A rendered batch script and the options to submit it with."""

    name: str
    script: str
    folder: Path                          # the job's own folder (shared with compute nodes)
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """A handle on a submitted job: its id and its folder. Enough to query it after a restart."""

    id: str
    folder: Path

    @property
    def output_path(self) -> Path:
        return self.folder / OUTPUT_FILE


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: JobState
    reason: Optional[str] = None          # Slurm's pending reason, or why it ended
    node: Optional[str] = None
    submit_time: Optional[float] = None   # epoch seconds
    start_time: Optional[float] = None
    end_time: Optional[float] = None
    estimated_start: Optional[float] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    #: Where the state came from: "squeue", "scontrol", "sacct", "pyslurm", "pyslurm.db"
    #: (accounting through pyslurm), "local", "exit-file" (the job's own exit status file) or
    #: "none".
    evidence: str = "scheduler"


@dataclass(frozen=True)
class JobUsage:
    """What a finished job used, as the scheduler counted it (``sacct`` with accounting)."""

    elapsed: float                        # seconds it ran
    billing: Optional[float] = None       # Slurm's billing TRES (units while it ran)
    gpus: Optional[int] = None            # GPUs it held (all nodes)

    @property
    def gpu_hours(self) -> Optional[float]:
        return None if self.gpus is None else self.gpus * self.elapsed / 3600

    @property
    def billing_hours(self) -> Optional[float]:
        """Billing units x hours: what an allocation is charged (Slurm's billing TRES-minutes
        over 60)."""
        return None if self.billing is None else self.billing * self.elapsed / 3600


@dataclass(frozen=True)
class StartEstimate:
    """When and where the scheduler expects a job to start, asked without submitting it."""

    start: Optional[float] = None         # epoch seconds; None: see ``reason``
    nodes: Optional[str] = None
    partition: Optional[str] = None
    reason: Optional[str] = None          # why there is no start time


@dataclass(frozen=True)
class PartitionInfo:
    nodes: Optional[int] = None                                   # TotalNodes
    billing_weights: Mapping[str, str] = field(default_factory=dict)   # TRESBillingWeights


@dataclass(frozen=True)
class JobOwner:
    """Which scheduler runs a job: the kind of backend ("slurm" for the CLI and pyslurm alike,
    "local") and where (the Slurm cluster's name, the local machine's host name; "" when it could
    not be read). Recorded with every job, so that a server on another backend or cluster that
    shares the state file (a login node without ``sbatch``, a second cluster mounting the same
    ``$HOME``) leaves those jobs to a server that can see them."""

    kind: str
    place: str = ""

    @property
    def key(self) -> str:
        """How the store records it: ``kind:place``."""
        return f"{self.kind}:{self.place}"

    @classmethod
    def parse(cls, key: str) -> "JobOwner":
        kind, _, place = key.partition(":")
        return cls(kind, place)

    def owns(self, key: Optional[str]) -> bool:
        """Whether a job recorded as ``key`` is this scheduler's (no record: a job from before
        owners were recorded, taken as ours; an unknown place matches any of the same kind)."""
        if key is None:
            return True
        other = JobOwner.parse(key)
        return other.kind == self.kind and (other.place == self.place or not other.place or
                                             not self.place)

    @property
    def where(self) -> str:
        """In words: "cluster osire (slurm)", "host login2 (local)"."""
        if not self.place:
            return f"an unnamed {self.kind} scheduler"
        return f"{'cluster' if self.kind == 'slurm' else 'host'} {self.place} ({self.kind})"


class Scheduler(abc.ABC):
    """One backend. ``name`` is what the health endpoint reports."""

    name: str = "abstract"

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> Job:
        """Write the script into ``request.folder`` and submit it; return the job handle."""

    @abc.abstractmethod
    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        """State of many jobs in ONE scheduler call (rarely one more, for jobs that ended).

        Every job asked about gets an answer, except one whose answer could not be read this time
        (a line the parser does not understand, a failing accounting query): it is left out, so
        the caller keeps its last known state, and the backend logs why."""

    @abc.abstractmethod
    def cancel(self, job: Job) -> None:
        """Cancel a job. Cancelling a finished or unknown job is not an error."""

    def cancel_named(self, name: str) -> None:
        """Cancel the caller's jobs called ``name``: the clean-up after a submission whose answer
        never came (it may or may not have created a job). Backends whose submit cannot time out
        that way need nothing here."""

    def output_path(self, job: Job) -> Path:
        return job.output_path

    def job_usage(self, job: Job) -> Optional[JobUsage]:
        """What a finished job used, or None where the backend cannot say (yet)."""
        return None

    def estimate_start(self, request: JobRequest) -> StartEstimate:
        """When ``request`` would start, without submitting it."""
        return StartEstimate(reason=f"the {self.name} backend cannot tell when a job would start")

    def partition_info(self, partition: Optional[str]) -> Optional[PartitionInfo]:
        """What the scheduler says of ``partition`` (None: the default one), None if nothing."""
        return None

    def partition_nodes(self, partition: Optional[str]) -> Optional[int]:
        """How many nodes ``partition`` (None: the default one) has, or None when unknown: a
        job asking for more would wait forever, so a launch is refused instead."""
        info = self.partition_info(partition)
        return info.nodes if info else None

    def describe(self) -> dict:
        return {"name": self.name, "calls": self.calls}

    def owner(self) -> JobOwner:
        """Who runs this backend's jobs (see ``JobOwner``); backends name their cluster or host,
        read once."""
        return JobOwner(self.name)

    # -- accounting of our own load on the scheduler

    @property
    def calls(self) -> dict[str, int]:
        """Scheduler calls made so far, by command (``squeue``, ``sbatch``...; for pyslurm the API
        call, ``Jobs.load``...): what this server costs the controller."""
        with _CALLS_LOCK:
            return dict(sorted(self.__dict__.get("_calls", {}).items()))

    def count_call(self, what: str) -> None:
        """Record one scheduler call; backends call it once per command or RPC (any thread)."""
        with _CALLS_LOCK:
            self.__dict__.setdefault("_calls", Counter())[what] += 1

    def stats(self) -> dict:
        """What the admin endpoint shows about this backend's use of the scheduler."""
        return {"calls": self.calls}


def same_folder(ours: str, recorded: str) -> bool:
    """Whether accounting's working folder is the job's (ids are reused after a reset of the
    cluster's state: a record run elsewhere is another job's)."""
    ours, recorded = os.path.normpath(ours), os.path.normpath(recorded.strip())
    return ours == recorded or os.path.realpath(ours) == os.path.realpath(recorded)


def exit_file_info(job: Job) -> Optional[JobInfo]:
    """Evidence of last resort: the exit status the job script left in its folder."""
    path = job.folder / EXIT_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        status = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    end = path.stat().st_mtime
    if status == 0:
        return JobInfo(job.id, JobState.COMPLETED, exit_code=0, end_time=end, evidence="exit-file")
    if status > 128:  # killed by a signal (bash reports 128 + signum)
        sig = status - 128
        return JobInfo(job.id, JobState.CANCELLED if sig in (15, 9) else JobState.FAILED,
                       reason=f"killed by signal {sig}", exit_code=status, signal=sig,
                       end_time=end, evidence="exit-file")
    return JobInfo(job.id, JobState.FAILED, reason="NonZeroExitCode", exit_code=status,
                   end_time=end, evidence="exit-file")


#: Prepended after a script's header so every job leaves ``EXIT_FILE`` in its folder.
#: bash gives an EXIT trap $?=0 when a signal kills it, hence the TERM/INT traps that exit 128+N.
EXIT_TRAP = ("__osire_exit_file={path}\n"
             "trap 'echo $? > \"$__osire_exit_file\"' EXIT\n"
             "trap 'exit 143' TERM\ntrap 'exit 130' INT\n")


def with_exit_trap(script: str, folder: Path) -> str:
    """Insert the exit trap after the shebang and the leading ``#SBATCH``/comment block."""
    lines = script.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        i += 1
    trap = EXIT_TRAP.format(path=shlex.quote(str(folder / EXIT_FILE)))
    return "".join(lines[:i]) + trap + "".join(lines[i:])


def command_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment a scheduler command (squeue, sacct, scontrol, scancel) runs with: ``base``
    without Slurm's input variables (``SLURM_TIME_FORMAT`` would make times unparsable,
    ``SQUEUE_USERS``/``SQUEUE_PARTITION``... hide jobs, ``SLURM_CLUSTERS`` changes the output)
    and without the server's credentials. PATH, HOME, USER, locale, SLURM_CONF, library paths
    and whatever else a site's Slurm needs stay."""
    return {k: v for k, v in base.items() if not (SLURM_ENV.match(k) or SECRET_ENV.match(k))}


def job_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment sbatch runs with (and, through --export=ALL, the job): ``base`` without the
    server's credentials and without Slurm's input variables (an enclosing job's SLURM_JOB_ID,
    inherited SBATCH_* options), plus ``extra``. The job gets its own SLURM_* from Slurm.
    Values travel in the environment, never in argv."""
    for name in extra:
        if not _ENV_NAME.match(name) or name.startswith(("SBATCH_", "SLURM_")):
            raise RequestError(f"environment variable name not allowed: {name!r}", field="env")
    env = command_environment(base)
    env.update(extra)
    return env

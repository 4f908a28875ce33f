"""The deployment state machine: pure functions from scheduler facts to replica/deployment states.

    queued ──> starting ──> ready ──> stopping ──> stopped
       │          │           │
       └──────────┴───────────┴──> failed (job failed, engine crashed, out of memory,
                                           time limit, node failure, vanished)
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional, Sequence

from ..schedulers.base import JobInfo, JobState

QUEUED, STARTING, READY, STOPPING, STOPPED, FAILED = (
    "queued", "starting", "ready", "stopping", "stopped", "failed")
TERMINAL = (STOPPED, FAILED)
_RUNNING = (JobState.RUNNING.value, JobState.COMPLETING.value)
_OOM = re.compile(r"out of memory|OutOfMemoryError|oom[-_ ]kill|Cannot allocate memory",
                  re.IGNORECASE)
#: What a multi-node job script says when one of its ranks ends (sbatch/engine.sh.j2).
_RANK_END = re.compile(r"osire: rank (?P<rank>\d+) on (?P<node>\S+) exited with status "
                       r"(?P<status>\d+)")


@dataclass(frozen=True)
class Replica:
    index: int
    folder: str
    job_id: Optional[str] = None
    state: str = QUEUED
    reason: Optional[str] = None
    scheduler_state: Optional[str] = None
    evidence: Optional[str] = None
    node: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    estimated_start: Optional[float] = None
    started_at: Optional[float] = None
    ready_at: Optional[float] = None
    ended_at: Optional[float] = None
    exit_code: Optional[int] = None
    healthy: bool = False
    log_tail: Optional[str] = None     # kept when the replica fails: its folder may be gone later
    fingerprint: Optional[str] = None  # SHA-256 of this run's TLS certificate (endpoint file)
    run: Optional[str] = None          # nonce of the engine run whose endpoint is in use
    stale_run: Optional[str] = None    # nonce of a run that ended (requeue): its endpoint is ignored
    lost_since: Optional[float] = None  # first "vanished" verdict not yet confirmed
    # Lifecycle policies (policies.py); rows written before they existed load with these defaults.
    restarts: int = 0                  # resubmissions after failures
    failures: tuple[str, ...] = ()     # the reason of each failure that led to a restart
    restart_at: Optional[float] = None  # waiting (no job yet) to be resubmitted at this time
    replaces: Optional[int] = None     # a renewal: the index of the replica it takes over from
    retire: Optional[str] = None       # being removed on purpose (renewed, scaled down): why
    retire_at: Optional[float] = None  # when it stopped taking new requests (draining)
    # The scheduler and cluster that runs its job (``JobOwner.key``: "slurm:osire", "local:host");
    # a server on another backend or cluster leaves the replica alone. None: recorded before.
    owner: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.failures, tuple):   # a list, as read back from JSON
            object.__setattr__(self, "failures", tuple(self.failures))

    @property
    def live(self) -> bool:
        return self.state not in TERMINAL

    @property
    def waiting_restart(self) -> bool:
        """Failed, and waiting (no job yet) to be submitted again."""
        return self.live and self.restart_at is not None and not self.job_id

    @property
    def active(self) -> bool:
        """Live and meant to stay: not draining away, not waiting for a cancel."""
        return self.live and self.retire is None

    @property
    def url(self) -> Optional[str]:
        if not (self.host and self.port):
            return None
        scheme = "https" if self.fingerprint else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def to_json(self, now: float) -> dict[str, Any]:
        doc = {k: v for k, v in vars(self).items()}
        doc["elapsed"] = round(now - self.started_at, 1) if self.started_at and self.live else None
        return doc


@dataclass(frozen=True)
class Deployment:
    id: str
    model: str
    created: float
    resources: dict[str, Any]
    replicas: tuple[Replica, ...]
    state: str = QUEUED
    reason: Optional[str] = None
    stop_requested: bool = False
    updated: float = 0.0
    abort_reason: Optional[str] = None   # a launch that failed half-way: why (ends as failed)
    launched_by: Optional[str] = None    # the server that submits its jobs (host:pid:nonce)
    version: int = 0                     # bumped by every write (compare-and-swap in the store)
    # Lifecycle policies (policies.py)
    stop_reason: Optional[str] = None    # why it was stopped: "stopped by user", "idle for ..."
    idle_timeout: Optional[float] = None  # seconds; None: the catalog's or the site's; 0: never
    pinned: bool = False                 # exempt from idle shutdown
    last_used: Optional[float] = None    # end of the last inference request (persisted ~1/min)
    note: Optional[str] = None           # why a policy cannot proceed (a limit), or None
    # A user's own model folder served by a catalog model's engine (user_models.py)
    base_model: Optional[str] = None     # the catalog model it borrows engine and resources from
    source: Optional[dict[str, Any]] = None   # {"path", "sha256"} of the user's folder

    @property
    def live(self) -> bool:
        return self.state not in TERMINAL

    def to_json(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "state": self.state, "reason": self.reason,
                "created": self.created, "updated": self.updated, "resources": self.resources,
                "stop_requested": self.stop_requested, "stop_reason": self.stop_reason,
                "pinned": self.pinned, "note": self.note, "base_model": self.base_model,
                "source": self.source,
                "restarts": sum(r.restarts for r in self.replicas),
                "failures": [f for r in self.replicas for f in r.failures],
                "replicas": [r.to_json(now) for r in self.replicas]}

    def to_doc(self) -> dict[str, Any]:
        """The stored document (its version is the record's, kept beside it)."""
        doc = asdict(self)
        doc.pop("version")
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any], version: int) -> "Deployment":
        """Records written by other versions load too: unknown fields are dropped, missing ones
        default."""
        replicas = tuple(Replica(**_known(Replica, r)) for r in doc["replicas"])
        return cls(**{**_known(cls, doc), "replicas": replicas, "version": version})


def apply_job_info(replica: Replica, info: JobInfo, *, stop_requested: bool,
                   log_tail: str = "", stop_reason: Optional[str] = None) -> Replica:
    """Fold one scheduler observation into a replica. A replica retired on purpose (renewed,
    scaled down) is stopping and then stopped, like one of a stopped deployment."""
    if replica.retire is not None:
        stop_requested, stop_reason = True, replica.retire
    was_running = replica.scheduler_state in _RUNNING
    replica = replace(replica, scheduler_state=info.state.value, evidence=info.evidence,
                      node=info.node or replica.node, exit_code=info.exit_code, lost_since=None)
    if info.state is JobState.PENDING:
        if replica.run and not was_running:
            return replica  # its engine's endpoint file already told us it started
        if was_running:     # requeued: the old run's address means nothing any more
            replica = forget_endpoint(replica)
        return replace(replica, state=STOPPING if stop_requested else QUEUED,
                       reason=info.reason, estimated_start=info.estimated_start)
    if not info.state.terminal:
        state = STOPPING if stop_requested else (READY if replica.state == READY else STARTING)
        reason = None if state != STOPPING else replica.reason
        return replace(replica, state=state, reason=reason, estimated_start=None,
                       started_at=replica.started_at or info.start_time)
    ended = info.end_time or replica.ended_at
    if stop_requested:
        return replace(forget_endpoint(replica), state=STOPPED,
                       reason=stop_reason or "stopped by user", ended_at=ended)
    return replace(forget_endpoint(replica), state=FAILED,
                   reason=failure_reason(replica, info, log_tail), ended_at=ended,
                   log_tail=log_tail or None)


def forget_endpoint(replica: Replica) -> Replica:
    """A replica whose engine run ended (requeued, finished) keeps no address, certificate or
    health: whatever answers at that host:port later is not its engine."""
    if replica.host is None and replica.run is None and not replica.healthy:
        return replica
    return replace(replica, host=None, port=None, fingerprint=None, healthy=False, run=None,
                   stale_run=replica.run or replica.stale_run)


def failure_reason(replica: Replica, info: JobInfo, log_tail: str) -> str:
    """Why a replica that nobody stopped has ended, in words a researcher understands."""
    state = info.state
    if state is JobState.TIMEOUT:
        return "time limit reached (the job ran out of its requested time)"
    rank = _RANK_END.search(log_tail)
    if rank and state is not JobState.CANCELLED:   # a multi-node replica lost one of its ranks
        status = int(rank["status"])
        how = f"killed by signal {status - 128}" if status > 128 else f"exit code {status}"
        return f"rank {rank['rank']} on node {rank['node']} ended ({how})"
    if state is JobState.OUT_OF_MEMORY or _OOM.search(log_tail):
        return "out of memory"
    if state is JobState.NODE_FAIL:
        return "node failure"
    if state is JobState.CANCELLED:
        return "job cancelled outside jupyter-osire-llm (e.g. scancel or an administrator)"
    if state is JobState.LOST:
        return "the job vanished from the scheduler and left no exit status"
    code = f" (exit code {info.exit_code})" if info.exit_code is not None else ""
    exit_code = info.exit_code or 0
    signal_number = info.signal or (exit_code - 128 if exit_code > 128 else 0)
    if signal_number:
        code = f" (killed by signal {signal_number})"
    if replica.state == READY:
        return f"engine crashed{code}"
    if state is JobState.COMPLETED:
        return "engine exited before it became ready"
    return f"job failed at start-up{code}"


def deployment_state(replicas: Sequence[Replica], stop_requested: bool,
                     abort_reason: Optional[str] = None,
                     stop_reason: Optional[str] = None) -> tuple[str, Optional[str]]:
    """A deployment is as good as its best replica; it is failed only when all have ended.

    A stopped (or aborted) deployment is stopping until the scheduler confirms every job ended.
    """
    states = [r.state for r in replicas]
    if stop_requested:
        if not all(s in TERMINAL for s in states):
            return STOPPING, abort_reason
        return (FAILED, abort_reason) if abort_reason else \
            (STOPPED, stop_reason or "stopped by user")
    for state in (READY, STARTING, QUEUED, STOPPING):
        # Replicas on their way out (renewed, scaled down) count only when nothing else is live.
        for pool in ([r for r in replicas if r.retire is None], replicas):
            first = next((r for r in pool if r.state == state), None)
            if first is not None:
                return state, first.reason
    failed = [r for r in replicas if r.state == FAILED]
    if failed:
        return FAILED, failed[0].reason
    return STOPPED, replicas[0].reason if replicas else None


def _known(cls: type, doc: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}

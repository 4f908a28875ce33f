"""A batch's record and its states: pure functions from scheduler facts to the OpenAI Batch shape.

    validating ──> queued ──> in_progress ──> completed
        │            │             │
        │            └─────────────┴──> failed (job failed, out of memory, node failure, ...)
        │                               expired (the job's time limit: partial results kept)
        └──> (nothing submitted:        cancelling ──> cancelled
              the create call fails)

``queued`` is ours (OpenAI has no queue to show): the job waits in Slurm, ``reason`` says why. A
failed, expired or cancelled batch with requests left can be resumed: a new job in the same
folder answers the rest, and (unless asked not to) tries the failed requests again, which makes
a completed batch with failed requests resumable too. A cancel that comes while the job is being
submitted leaves the batch ``cancelling`` until the submission's outcome is known, so it cannot
be resumed into a second job meanwhile.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional

from ..schedulers.base import JobInfo, JobState

VALIDATING, QUEUED, IN_PROGRESS, CANCELLING = "validating", "queued", "in_progress", "cancelling"
COMPLETED, FAILED, EXPIRED, CANCELLED = "completed", "failed", "expired", "cancelled"
LIVE = (VALIDATING, QUEUED, IN_PROGRESS, CANCELLING)
RESUMABLE = (FAILED, EXPIRED, CANCELLED)
WINDOW = 24 * 3600


@dataclass(frozen=True)
class Batch:
    id: str
    model: str
    endpoint: str
    input_file_id: str
    folder: str
    created_at: int
    total: int
    resources: dict = field(default_factory=dict)
    metadata: Optional[dict] = None
    completion_window: str = "24h"
    status: str = VALIDATING
    reason: Optional[str] = None          # Slurm's pending reason, or why it ended
    job_id: Optional[str] = None
    jobs: tuple[str, ...] = ()            # every job it ran as (a resume adds one)
    scheduler_state: Optional[str] = None
    node: Optional[str] = None
    completed: int = 0
    failed: int = 0
    in_progress_at: Optional[int] = None
    completed_at: Optional[int] = None
    failed_at: Optional[int] = None
    expired_at: Optional[int] = None
    cancelling_at: Optional[int] = None
    cancelled_at: Optional[int] = None
    cancel_requested: bool = False
    launched_by: str = ""
    log_tail: Optional[str] = None
    lost_since: Optional[float] = None    # when the scheduler first said its job vanished
    owner: Optional[str] = None           # the scheduler its job runs on (JobOwner.key)
    version: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.jobs, tuple):   # a list, as read back from JSON
            object.__setattr__(self, "jobs", tuple(self.jobs))

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def left(self) -> int:
        return max(0, self.total - self.completed - self.failed)

    def resumable(self, retry_failed: bool = True) -> bool:
        """Whether a resume has anything to do: requests left, or failed ones to try again."""
        if self.status not in RESUMABLE + (COMPLETED,):
            return False
        return self.left > 0 or (retry_failed and self.failed > 0)

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("version")
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any], version: int) -> "Batch":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names and k != "version"},
                   version=version)

    def to_openai(self, output_bytes: int = 0, error_bytes: int = 0) -> dict[str, Any]:
        """The OpenAI Batch object, with our own details under ``osire``."""
        ended = self.status in (COMPLETED, FAILED, EXPIRED, CANCELLED)
        errors = None
        if self.status in (FAILED, EXPIRED) and self.reason:
            errors = {"object": "list", "data": [{"code": self.status, "message": self.reason,
                                                  "param": None, "line": None}]}
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": errors,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": output_file_id(self.id) if ended and output_bytes else None,
            "error_file_id": error_file_id(self.id) if ended and error_bytes else None,
            "created_at": self.created_at, "in_progress_at": self.in_progress_at,
            "expires_at": self.created_at + WINDOW, "finalizing_at": None,
            "completed_at": self.completed_at, "failed_at": self.failed_at,
            "expired_at": self.expired_at, "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed,
                               "failed": self.failed},
            "metadata": self.metadata, "model": self.model,
            "osire": {"reason": self.reason, "job_id": self.job_id, "jobs": list(self.jobs),
                      "scheduler_state": self.scheduler_state, "node": self.node,
                      "resources": self.resources, "left": self.left,
                      "log_tail": self.log_tail, "owner": self.owner,
                      "resumable": self.resumable()},
        }


def output_file_id(batch_id: str) -> str:
    return f"file-{batch_id}-output"


def error_file_id(batch_id: str) -> str:
    return f"file-{batch_id}-errors"


def apply_job_info(batch: Batch, info: JobInfo, now: int) -> Batch:
    """Fold one scheduler observation into a batch (counts come from ``apply_counts``)."""
    batch = replace(batch, scheduler_state=info.state.value, node=info.node or batch.node)
    if info.state is JobState.PENDING:
        return replace(batch, status=CANCELLING if batch.cancel_requested else QUEUED,
                       reason=info.reason)
    if not info.state.terminal:
        return replace(batch, status=CANCELLING if batch.cancel_requested else IN_PROGRESS,
                       reason=None, in_progress_at=batch.in_progress_at or
                       int(info.start_time or now))
    end = int(info.end_time or now)
    if batch.cancel_requested:
        return replace(batch, status=CANCELLED, reason="cancelled by user", cancelled_at=end)
    if info.state is JobState.COMPLETED and batch.left == 0:
        return replace(batch, status=COMPLETED, reason=None, completed_at=end)
    if info.state is JobState.TIMEOUT:
        return replace(batch, status=EXPIRED, expired_at=end, reason=(
            f"the job's time limit ended it after {batch.completed + batch.failed} of "
            f"{batch.total} requests; resume it for the rest"))
    return replace(batch, status=FAILED, failed_at=end, reason=_failure(batch, info))


def _failure(batch: Batch, info: JobInfo) -> str:
    done = f"{batch.completed + batch.failed} of {batch.total} requests answered"
    why = {JobState.OUT_OF_MEMORY: "out of memory", JobState.NODE_FAIL: "node failure",
           JobState.CANCELLED: f"cancelled outside jupyter-osire-llm ({info.reason})"
           if info.reason else "cancelled outside jupyter-osire-llm",
           JobState.LOST: "the job vanished from the scheduler"}.get(info.state)
    if why is None and info.state is JobState.COMPLETED:
        why = "the job ended before every request was answered"
    if why is None:
        why = f"the job failed (exit code {info.exit_code})" if info.exit_code is not None \
            else f"the job failed ({info.reason or info.state.value})"
    return f"{why}; {done}"


def apply_counts(batch: Batch, completed: int, failed: int) -> Batch:
    """Counts read from the job folder never go backwards (a torn read, a slow file system)."""
    completed, failed = max(batch.completed, completed), max(batch.failed, failed)
    if (completed, failed) == (batch.completed, batch.failed):
        return batch
    return replace(batch, completed=completed, failed=failed)

"""Offline batch inference: the OpenAI Files and Batches subset, each batch one Slurm job.

A batch's input is checked line by line before anything is submitted (``batch_input.py``); then
it gets a folder under ``<job_root>/batches/``, holding its input, the job script
(``sbatch/batch.sh.j2``: the catalog model's engine on the node's loopback, and
``batch_runner.py`` appending each answer as it arrives), its results and its log. Records live
in the shared SQLite store, written with a compare-and-swap on their version like deployments;
the monitor observes batch jobs in the same single scheduler query as engines and is the only
writer of what it observes (``observe_job``, ``observe_progress``).

Uploaded files live under ``<job_root>/files/``; a batch's output and error files are its own
result files, served as ``file-<batch>-output`` and ``file-<batch>-errors``.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Optional

from ..core.jobfiles import prepare_batch_folder
from ..core.limits import parse_resources
from ..core.usage import Holdings, gpus_in_use, live_batches, resources_gpus, within
from ..errors import (
    ConfigError,
    Conflict,
    OsireError,
    RequestError,
    SchedulerError,
    SchedulerTimeout,
    StoreError,
)
from ..formats.batch_input import check_endpoint, check_input
from ..schedulers.base import Job, JobRequest, Resources
from .file_api import FileApi
from .observe import Observing, job_name
from .results import (
    ERRORS,
    OUTPUT,
    complete_size,
    count_results,
    new_run,
    restore_errors,
)
from .states import CANCELLED, CANCELLING, QUEUED, VALIDATING, Batch

log = logging.getLogger(__name__)
CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "resources"}
__all__ = ["BatchService", "count_results"]


class BatchService(FileApi, Observing):
    async def view(self, batch: Batch) -> dict[str, Any]:
        """The OpenAI Batch object (with the sizes of its result files)."""
        sizes = await asyncio.to_thread(
            lambda: [complete_size(Path(batch.folder) / name) for name in (OUTPUT, ERRORS)])
        return batch.to_openai(*sizes)

    async def create(self, body: dict[str, Any]) -> Batch:
        """Check everything, persist, submit; a refused batch submits nothing and keeps nothing."""
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise RequestError(f"unknown field {unknown[0]!r}", field=unknown[0])
        endpoint = check_endpoint(body.get("endpoint"))
        if body.get("completion_window", "24h") != "24h":
            raise RequestError("'completion_window' must be \"24h\"", field="completion_window")
        metadata = _check_metadata(body.get("metadata"))
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise RequestError("'input_file_id' is required", field="input_file_id")
        upload = await self.file(file_id)
        if upload["purpose"] != "batch":
            raise RequestError(f"file {file_id} has purpose {upload['purpose']!r}, not 'batch'",
                               field="input_file_id")
        source = self.file_root / file_id
        parsed = await asyncio.to_thread(_check_file, source, endpoint, list(self.catalog.models))
        entry = self.catalog.get(parsed.model)
        wanted = self.limits.apply(parse_resources(body.get("resources"), base=entry.resources),
                                   1)
        if wanted.nodes > 1:
            raise RequestError(f"a batch runs on one node; model {entry.name!r} asks for "
                               f"{wanted.nodes} (set resources.nodes to 1)",
                               field="resources.nodes")
        batch_id = f"batch_{secrets.token_hex(12)}"
        batch = Batch(id=batch_id, model=parsed.model, endpoint=endpoint, input_file_id=file_id,
                      folder=str(self.batch_root / batch_id), created_at=int(self.clock()),
                      total=parsed.total, metadata=metadata, launched_by=self.server_id,
                      owner=self.owner.key,
                      resources={k: v for k, v in vars(wanted).items() if v is not None})
        await self.records.insert(batch, within(partial(self._check_limits, batch=batch)))
        try:
            await asyncio.to_thread(prepare_batch_folder, Path(batch.folder), source)
            await self._submit(batch_id)
        except (SchedulerError, StoreError, ConfigError, OSError) as exc:
            await self._undo_create(batch_id, exc)
            if isinstance(exc, OSError):
                raise RequestError(f"cannot prepare the batch folder under {self.batch_root}: "
                                   f"{exc.strerror or exc}", field="input_file_id") from exc
            raise
        return self.get(batch_id)

    def _check_limits(self, holdings: Holdings, batch: Batch) -> None:
        """Another live batch: within ``max_batches`` and, with the user's deployments, within
        ``max_total_gpus``."""
        live = len(live_batches(holdings))
        if live >= self.max_batches:
            raise RequestError(f"{live} batches are running or queued, the most one user may "
                               f"have (OsireLLM.max_batches = {self.max_batches})",
                               field="input_file_id")
        self.limits.check_total_gpus(gpus_in_use(holdings), resources_gpus(batch.resources))

    async def _submit(self, batch_id: str, retry_failed: bool = False) -> None:
        batch = self.get(batch_id)
        entry = self.catalog.get(batch.model)
        resources = Resources(**batch.resources)
        folder = Path(batch.folder)
        script = self.renderer.render_batch(entry, resources, batch_id, folder, self.concurrency,
                                            self.retry_delay)
        request = JobRequest(name=job_name(batch_id), script=script, folder=folder,
                             resources=resources)
        self._submitting.add(batch_id)
        try:
            earlier = await asyncio.to_thread(new_run, folder, retry_failed)
            try:
                job = await asyncio.to_thread(self.scheduler.submit, request)
            except SchedulerError:
                await asyncio.to_thread(restore_errors, folder, earlier)
                raise
            try:
                await self._mutate(batch_id, lambda b: replace(
                    b, job_id=job.id, jobs=b.jobs + (job.id,), owner=self.owner.key,
                    status=CANCELLING
                    if b.cancel_requested else QUEUED, reason=None, scheduler_state=None))
            except OsireError:   # not recorded: no job may run untracked
                await asyncio.to_thread(self.scheduler.cancel, Job(job.id, folder))
                raise
        finally:
            self._submitting.discard(batch_id)
        if self.get(batch_id).cancel_requested:   # cancelled while it was being submitted
            await self._send_cancel(self.get(batch_id))

    async def _undo_create(self, batch_id: str, exc: Exception) -> None:
        if isinstance(exc, SchedulerTimeout):   # sbatch may have made a job after all
            try:
                await asyncio.to_thread(self.scheduler.cancel_named, job_name(batch_id))
            except SchedulerError:
                log.warning("batch %s: could not cancel a job sbatch may have made", batch_id)
        batch = self._batches.pop(batch_id)
        try:
            await asyncio.to_thread(self.store.delete, "batches", batch_id)
        except StoreError:
            log.error("batch %s: could not remove its record after a failed submission", batch_id)
        await asyncio.to_thread(shutil.rmtree, batch.folder, True)

    async def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if not batch.live:
            return batch
        self._here(batch, "cancel")
        now = int(self.clock())
        # Without a job id the job may be being submitted (here or by another server): the batch
        # stays cancelling, never resumable, until the submission has a job to cancel or failed.
        batch = await self._mutate(batch_id, lambda b: replace(
            b, cancel_requested=True, status=CANCELLING, cancelling_at=b.cancelling_at or now))
        if batch.job_id:
            await self._send_cancel(batch)
        return self.get(batch_id)

    async def delete(self, batch_id: str) -> dict[str, Any]:
        """Forget an ended batch and remove its folder: answers, errors, log (its input file is
        a file of its own and stays)."""
        batch = self.get(batch_id)
        if batch.live:
            raise Conflict(f"batch {batch_id} is {batch.status}: cancel it first",
                           field="batch_id")
        if not await asyncio.to_thread(self.store.delete, "batches", batch_id, batch.version):
            await self.refresh()
            raise Conflict(f"batch {batch_id} was changed by another server (resumed?); look "
                           "again", field="batch_id")
        self._batches.pop(batch_id, None)
        folder = Path(batch.folder)   # <job_root>/batches/<id>, whichever server made it
        if folder.name == batch_id and folder.parent.name == self.batch_root.name:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self.changed.set()
        return {"id": batch_id, "object": "batch.deleted", "deleted": True}

    async def resume(self, batch_id: str, retry_failed: bool = True) -> Batch:
        """Submit an ended batch again for the requests it has not answered and (unless
        ``retry_failed`` is false) those that failed; its answers so far stay, and the errors
        of the earlier runs move to ``errors.<n>.jsonl``."""
        if not isinstance(retry_failed, bool):
            raise RequestError("'retry_failed' must be true or false", field="retry_failed")
        batch = self.get(batch_id)
        self._here(batch, "resume")
        if not batch.resumable(retry_failed):
            raise Conflict(f"batch {batch_id} is {batch.status} with {batch.left} requests left "
                           f"and {batch.failed} failed"
                           f"{'' if retry_failed else ' (not to be retried)'}: nothing to resume",
                           field="batch_id")

        def change(b: Batch) -> Batch:
            if not b.resumable(retry_failed):
                raise Conflict(f"batch {batch_id} is {b.status}", field="batch_id")
            return replace(b, status=VALIDATING, cancel_requested=False, reason=None,
                           failed_at=None, expired_at=None, cancelled_at=None,
                           cancelling_at=None, completed_at=None, lost_since=None,
                           failed=0 if retry_failed else b.failed,
                           launched_by=self.server_id, owner=self.owner.key, log_tail=None)
        await self._mutate(batch_id, change, check=within(partial(self._check_limits, batch=batch)))
        try:
            await self._submit(batch_id, retry_failed)
        except (SchedulerError, StoreError, ConfigError, OSError) as exc:
            await self._not_resumed(batch, exc)
            raise
        return self.get(batch_id)

    async def _not_resumed(self, before: Batch, exc: Exception) -> None:
        """A resume whose submission failed: the batch as it was (cancelled if a cancel came
        meanwhile); a job a timed-out sbatch may have made is cancelled by name."""
        if isinstance(exc, SchedulerTimeout):
            try:
                await asyncio.to_thread(self.scheduler.cancel_named, job_name(before.id))
            except SchedulerError:
                log.warning("batch %s: could not cancel a job sbatch may have made", before.id)
        message = exc.message if isinstance(exc, OsireError) else str(exc)
        counts = await asyncio.to_thread(count_results, Path(before.folder))
        now = int(self.clock())
        await self._mutate(before.id, lambda b: replace(
            b, status=CANCELLED if b.cancel_requested else before.status,
            completed_at=before.completed_at, failed_at=before.failed_at,
            expired_at=before.expired_at,
            cancelled_at=now if b.cancel_requested else before.cancelled_at,
            completed=counts[0], failed=counts[1], reason=f"not resumed: {message}"))


def _check_metadata(metadata: Any) -> Optional[dict]:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in metadata.items()):
        raise RequestError("'metadata' must map at most 16 keys (64 characters) to strings "
                           "(512 characters)", field="metadata")
    return metadata


def _check_file(path: Path, endpoint: str, models: list[str]) -> Any:
    with path.open("rb") as f:
        return check_input(f, endpoint, models)

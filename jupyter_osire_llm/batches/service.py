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
import json
import logging
import secrets
import shutil
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, AsyncGenerator, BinaryIO, Callable, Optional

from ..core.catalog import Catalog
from ..core.limits import SiteLimits, parse_resources
from ..core.logtail import read_tail
from ..core.private_folder import private_folder
from ..core.render import ScriptRenderer
from ..core.store import Holdings, Store
from ..core.usage import gpus_in_use, live_batches, resources_gpus
from ..deployments.service import GUARD_SOURCE, KEY_FILE, write_key
from ..errors import (
    ConfigError,
    Conflict,
    NotFound,
    OsireError,
    RequestError,
    SchedulerError,
    SchedulerTimeout,
    StoreError,
)
from ..formats.batch_input import check_endpoint, check_input
from ..schedulers.base import Job, JobInfo, JobOwner, JobRequest, JobState, Resources, Scheduler
from .files import CHUNK, FileUpload, expired, expires_at
from .states import (
    CANCELLED,
    CANCELLING,
    IN_PROGRESS,
    QUEUED,
    VALIDATING,
    Batch,
    apply_counts,
    apply_job_info,
    error_file_id,
    output_file_id,
)

log = logging.getLogger(__name__)
RUNNER_SOURCE = Path(__file__).parents[1] / "jobside" / "batch_runner.py"
INPUT, OUTPUT, ERRORS, PROGRESS = ("input.jsonl", "output.jsonl", "errors.jsonl",
                                   "progress.json")
PURPOSES = ("batch", "batch_output", "user_data")
CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "resources"}
CANCEL_RETRY = 5.0
SWEEP_EVERY = 60.0   # least seconds between the sweeps of expired files that uploads make
#: The runner's last phase (progress.json) when its engine let it down.
ENGINE_PHASES = {"engine-failed": "the engine exited or never became healthy",
                 "engine-died": "the engine stopped while the batch ran",
                 "engine-impostor": "another process answered in the engine's place (it was sent "
                                    "neither the key nor a prompt)"}


class BatchService:
    def __init__(self, *, catalog: Catalog, limits: SiteLimits, scheduler: Scheduler,
                 store: Store, renderer: ScriptRenderer, job_root: Path, server_id: str,
                 changed: asyncio.Event, max_batches: int = 4, concurrency: int = 16,
                 max_file_size: int = 200 * 1024 * 1024, file_expiry: float = 0.0,
                 lost_grace: float = 60.0, retry_delay: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.limits, self.scheduler = catalog, limits, scheduler
        self.owner: JobOwner = scheduler.owner()   # jobs of another backend or cluster: theirs
        self.store, self.renderer, self.server_id = store, renderer, server_id
        self.changed, self.clock = changed, clock
        self.lost_grace = lost_grace     # a "vanished" verdict is believed after so many seconds
        self.retry_delay = retry_delay   # the runner's first wait before trying a request again
        self.max_batches, self.concurrency, self.max_file_size = \
            max_batches, concurrency, max_file_size
        self.batch_root, self.file_root = job_root / "batches", job_root / "files"
        self._batches: dict[str, Batch] = {}
        self._submitting: set[str] = set()
        self._cancelled_at: dict[str, float] = {}
        self.file_expiry, self._swept = file_expiry, float("-inf")
        for doc, version in store.load_docs("batches"):
            self._remember(doc, version)

    # -- files ---------------------------------------------------------------------------------

    def start_upload(self) -> FileUpload:
        """A file being received under ``<job_root>/files`` (blocking: call it in a thread);
        ``finish_upload`` keeps it, its ``discard`` forgets it."""
        try:
            return FileUpload(private_folder(self.file_root.parent, self.file_root.name),
                              self.max_file_size)
        except (OSError, ConfigError) as exc:
            why = exc.message if isinstance(exc, ConfigError) else exc.strerror or str(exc)
            raise StoreError(f"cannot store the upload under {self.file_root}: {why}") from exc

    async def finish_upload(self, upload: FileUpload, filename: str, purpose: str,
                            expires_after: Any = None) -> dict[str, Any]:
        """Record a completely received upload (discarded when refused)."""
        try:
            if purpose not in PURPOSES:
                raise RequestError(f"'purpose' must be one of {', '.join(PURPOSES)}, got "
                                   f"{purpose!r}", field="purpose")
            created = int(self.clock())
            file_id = f"file-{secrets.token_hex(12)}"
            doc = {"id": file_id, "object": "file", "bytes": upload.size, "created_at": created,
                   "expires_at": expires_at(expires_after, created, self.file_expiry),
                   "filename": _safe_name(filename), "purpose": purpose, "status": "processed",
                   "status_details": None}
            try:
                await asyncio.to_thread(upload.keep, self.file_root / file_id)
            except OSError as exc:
                raise StoreError(f"cannot store the upload under {self.file_root}: "
                                 f"{exc.strerror or exc}") from exc
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        try:
            await asyncio.to_thread(self.store.insert_doc, "files", file_id, self.clock(), doc)
        except StoreError:
            await asyncio.to_thread(_remove_quietly, self.file_root / file_id)
            raise
        await self.sweep_files(every=SWEEP_EVERY)
        return doc

    async def upload(self, filename: str, purpose: str, data: bytes,
                     expires_after: Any = None) -> dict[str, Any]:
        """An upload given whole (the HTTP route streams through ``start_upload``)."""
        upload = await asyncio.to_thread(self.start_upload)
        try:
            upload.add(data)
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        return await self.finish_upload(upload, filename, purpose, expires_after)

    async def files(self) -> list[dict[str, Any]]:
        await self.sweep_files()
        return [{"expires_at": None, **doc}
                for doc, _ in await asyncio.to_thread(self.store.load_docs, "files")]

    async def file(self, file_id: str) -> dict[str, Any]:
        batch = self._result_owner(file_id)
        if batch is not None:
            path = self._result_path(batch, file_id)
            size = await asyncio.to_thread(_complete_size, path)
            return {"id": file_id, "object": "file", "bytes": size,
                    "created_at": batch.completed_at or batch.failed_at or batch.expired_at or
                    batch.cancelled_at or batch.created_at, "expires_at": None,
                    "filename": path.name, "purpose": "batch_output", "status": "processed",
                    "status_details": None}
        found = await asyncio.to_thread(self.store.load_docs, "files", [file_id])
        if found and expired(found[0][0], self.clock()) and file_id in await self.sweep_files():
            found = []
        if not found:
            raise NotFound(f"no file {file_id!r}", field="file_id")
        return {"expires_at": None, **found[0][0]}

    async def file_content(self, file_id: str) -> tuple[int, AsyncGenerator[bytes, None]]:
        """A file's size and its bytes in chunks of at most ``CHUNK`` (a batch's results: up to
        their last complete line), never read whole."""
        batch = self._result_owner(file_id)
        if batch is not None:
            path = self._result_path(batch, file_id)
            size = await asyncio.to_thread(_complete_size, path)
        else:
            path, size = self.file_root / file_id, (await self.file(file_id))["bytes"]
        try:
            source = await asyncio.to_thread(open, path, "rb") if size else None
        except FileNotFoundError:
            raise NotFound(f"file {file_id!r} has no content on disk", field="file_id") \
                from None
        return size, _chunks(source, size)

    async def sweep_files(self, every: float = 0.0) -> list[str]:
        """Delete uploaded files past their ``expires_at`` (a live batch's input stays until the
        batch ends); the ids deleted. With ``every``, at most once in that many seconds."""
        now = self.clock()
        if now - self._swept < every:
            return []
        self._swept = now
        await self.refresh()   # another server's new batch may use a file
        in_use = {b.input_file_id for b in self._batches.values() if b.live}
        docs = await asyncio.to_thread(self.store.load_docs, "files")
        gone = [doc["id"] for doc, _ in docs if expired(doc, now) and doc["id"] not in in_use]
        for file_id in gone:
            await asyncio.to_thread(self.store.delete_doc, "files", file_id)
            await asyncio.to_thread(_remove_quietly, self.file_root / file_id)
        if gone:
            log.info("deleted %d expired file(s): %s", len(gone), ", ".join(gone))
        return gone

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        if self._result_owner(file_id) is not None:
            raise Conflict("a batch's result file goes with its batch", field="file_id")
        await self.file(file_id)
        await asyncio.to_thread(self.store.delete_doc, "files", file_id)
        await asyncio.to_thread(_remove_quietly, self.file_root / file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def _result_owner(self, file_id: str) -> Optional[Batch]:
        for batch in self._batches.values():
            if file_id in (output_file_id(batch.id), error_file_id(batch.id)):
                return batch
        return None

    @staticmethod
    def _result_path(batch: Batch, file_id: str) -> Path:
        return Path(batch.folder) / (OUTPUT if file_id == output_file_id(batch.id) else ERRORS)

    # -- batches -------------------------------------------------------------------------------

    def all(self) -> list[Batch]:
        return sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)

    def get(self, batch_id: str) -> Batch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise NotFound(f"no batch {batch_id!r}", field="batch_id") from None

    async def view(self, batch: Batch) -> dict[str, Any]:
        """The OpenAI Batch object (with the sizes of its result files)."""
        sizes = await asyncio.to_thread(
            lambda: [_complete_size(Path(batch.folder) / name) for name in (OUTPUT, ERRORS)])
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
        batch_id = f"batch_{secrets.token_hex(12)}"
        batch = Batch(id=batch_id, model=parsed.model, endpoint=endpoint, input_file_id=file_id,
                      folder=str(self.batch_root / batch_id), created_at=int(self.clock()),
                      total=parsed.total, metadata=metadata, launched_by=self.server_id,
                      owner=self.owner.key, resources={k: v for k, v in vars(wanted).items() if v is not None})
        await asyncio.to_thread(self.store.insert_doc, "batches", batch_id, self.clock(),
                                batch.to_doc(), partial(self._check_limits, batch=batch))
        self._batches[batch_id] = replace(batch, version=1)
        try:
            await asyncio.to_thread(_prepare_folder, Path(batch.folder), source)
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
        request = JobRequest(name=_job_name(batch_id), script=script, folder=folder,
                             resources=resources)
        self._submitting.add(batch_id)
        try:
            earlier = await asyncio.to_thread(_new_run, folder, retry_failed)
            try:
                job = await asyncio.to_thread(self.scheduler.submit, request)
            except SchedulerError:
                await asyncio.to_thread(_restore_errors, folder, earlier)
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
                await asyncio.to_thread(self.scheduler.cancel_named, _job_name(batch_id))
            except SchedulerError:
                log.warning("batch %s: could not cancel a job sbatch may have made", batch_id)
        batch = self._batches.pop(batch_id)
        try:
            await asyncio.to_thread(self.store.delete_doc, "batches", batch_id)
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
        if not await asyncio.to_thread(self.store.delete_doc, "batches", batch_id,
                                       batch.version):
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
        await self._mutate(batch_id, change, check=partial(self._check_limits, batch=batch))
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
                await asyncio.to_thread(self.scheduler.cancel_named, _job_name(before.id))
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

    async def _send_cancel(self, batch: Batch) -> None:
        self._cancelled_at[batch.id] = self.clock()
        try:
            await asyncio.to_thread(self.scheduler.cancel, Job(str(batch.job_id),
                                                               Path(batch.folder)))
        except SchedulerError as exc:   # the monitor sends it again
            log.warning("batch %s: cancel failed, will retry: %s", batch.id, exc.message)
        self.changed.set()

    # -- what the monitor observes -------------------------------------------------------------

    def live_jobs(self) -> list[tuple[str, Job]]:
        return [(b.id, Job(b.job_id, Path(b.folder))) for b in self._batches.values()
                if b.live and b.job_id and self.owner.owns(b.owner)]

    def _here(self, batch: Batch, action: str) -> None:
        """Refuse to act on a batch whose job another backend or cluster runs: this server can
        neither see nor cancel that job, nor submit to where its folder lives."""
        if not self.owner.owns(batch.owner):
            raise Conflict(f"batch {batch.id} runs on {JobOwner.parse(str(batch.owner)).where}; "
                           f"this server uses {self.owner.where}: {action} it from a server "
                           "there", field="batch_id")

    async def observe_job(self, batch_id: str, info: JobInfo) -> None:
        batch = self.get(batch_id)
        if info.job_id != batch.job_id or not batch.live:
            return
        now = int(self.clock())
        if info.state is JobState.LOST and not self._lost_confirmed(batch):
            if batch.lost_since is None:
                await self._mutate(batch_id, lambda b: replace(b, lost_since=self.clock())
                                   if b.live and b.job_id == info.job_id else b)
            return
        if info.state.terminal:
            ended = await asyncio.to_thread(_ended_run, Path(batch.folder))
            await self._mutate(batch_id, lambda b: _end(b, info, now, *ended)
                               if b.live and b.job_id == info.job_id else b)
            return
        await self._mutate(batch_id, lambda b: replace(apply_job_info(b, info, now),
                                                       lost_since=None)
                           if b.live and b.job_id == info.job_id else b)
        if batch.cancel_requested and self.clock() - self._cancelled_at.get(batch_id, 0) >= \
                CANCEL_RETRY:
            await self._send_cancel(self.get(batch_id))

    def _lost_confirmed(self, batch: Batch) -> bool:
        """"Vanished" is a verdict from missing evidence (as for deployments): believed only
        once it has held for ``lost_grace`` seconds, since an ended batch is never asked about
        again."""
        return batch.lost_since is not None and \
            self.clock() - batch.lost_since >= self.lost_grace

    async def observe_progress(self) -> None:
        """Counts of running batches from their ``progress.json`` (cheap: one small file)."""
        running = [b for b in self._batches.values()
                   if b.status in (IN_PROGRESS, CANCELLING) and b.job_id
                   and self.owner.owns(b.owner)]
        if not running:
            return
        found = await asyncio.to_thread(_read_all_progress, [Path(b.folder) for b in running])
        for batch, counts in zip(running, found):
            if counts is not None:
                await self._mutate(batch.id, partial(_with_counts, counts=counts))

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        """Batches whose submission a server that died cut off (validating, or cancelled while
        being submitted): its job may exist by name."""
        for batch in list(self._batches.values()):
            if not batch.live or batch.job_id or batch.id in self._submitting or \
                    not self.owner.owns(batch.owner) or \
                    self.clock() - batch.created_at < 60 or alive(batch.launched_by):
                continue
            try:
                await asyncio.to_thread(self.scheduler.cancel_named, _job_name(batch.id))
            except SchedulerError:
                continue
            now = int(self.clock())
            await self._mutate(batch.id, lambda b: replace(
                b, status=CANCELLED, cancelled_at=now, reason="cancelled by user")
                if b.cancel_requested else replace(
                b, status="failed", failed_at=now,
                reason="its submission was cut off (the Jupyter server stopped)"))

    async def refresh(self) -> None:
        """Bring in what another Jupyter server of this user wrote."""
        versions = await asyncio.to_thread(self.store.doc_versions, "batches")
        stale = [i for i, v in versions.items()
                 if i not in self._batches or self._batches[i].version != v]
        for gone in set(self._batches) - set(versions):
            self._batches.pop(gone, None)
        if stale:
            for doc, version in await asyncio.to_thread(self.store.load_docs, "batches", stale):
                self._remember(doc, version)

    # -- state ---------------------------------------------------------------------------------

    def _remember(self, doc: dict, version: int) -> None:
        try:
            batch = Batch.from_doc(doc, version)
        except (TypeError, ValueError) as exc:
            problem = f"batch {doc.get('id')}: unreadable record skipped ({exc})"
            if problem not in self.store.problems:
                self.store.problems.append(problem)
            return
        self._batches[batch.id] = batch

    async def _mutate(self, batch_id: str, change: Callable[[Batch], Batch],
                      check: Optional[Callable[[Holdings], None]] = None) -> Batch:
        """Apply ``change`` to the current record, compare-and-swap on its version (after
        ``check``, which raises to refuse, has seen what else the user holds)."""
        for _ in range(20):
            current = self.get(batch_id)
            new = change(current)
            if new == current:
                return current
            if await asyncio.to_thread(self.store.save_doc, "batches", batch_id, new.to_doc(),
                                       current.version, check):
                self._batches[batch_id] = replace(new, version=current.version + 1)
                self.changed.set()
                return self._batches[batch_id]
            found = await asyncio.to_thread(self.store.load_docs, "batches", [batch_id])
            if not found:
                self._batches.pop(batch_id, None)
                raise NotFound(f"no batch {batch_id!r}", field="batch_id")
            self._remember(*found[0])
        raise Conflict(f"batch {batch_id} is being changed by another server; try again")


def _ended_run(folder: Path) -> tuple[tuple[int, int], Optional[str], str]:
    """What a finished job left: its counts, the runner's last phase, its log's tail."""
    try:
        phase = json.loads((folder / PROGRESS).read_text()).get("phase")
    except (OSError, ValueError, AttributeError):
        phase = None
    tail = read_tail(folder / "job.log", 20) or ""
    try:
        key = (folder / KEY_FILE).read_text().strip()
    except OSError:
        key = ""
    return count_results(folder), phase, tail.replace(key, "***") if key else tail


def _end(batch: Batch, info: JobInfo, now: int, counts: tuple[int, int], phase: Optional[str],
         tail: str) -> Batch:
    ended = apply_job_info(apply_counts(batch, *counts), info, now)
    why = ENGINE_PHASES.get(phase or "")
    if ended.status == "failed" and why:
        ended = replace(ended, reason=f"{why}; {ended.completed + ended.failed} of "
                                      f"{ended.total} requests answered (see its log)")
    return replace(ended, log_tail=tail or None) if ended.status != "completed" else ended


def _job_name(batch_id: str) -> str:
    return f"osire-{batch_id}"


def _check_metadata(metadata: Any) -> Optional[dict]:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in metadata.items()):
        raise RequestError("'metadata' must map at most 16 keys (64 characters) to strings "
                           "(512 characters)", field="metadata")
    return metadata


def _safe_name(filename: str) -> str:
    name = Path(filename or "upload.jsonl").name
    return "".join(c for c in name if c.isprintable())[:255] or "upload.jsonl"


async def _chunks(source: Optional[BinaryIO], size: int) -> AsyncGenerator[bytes, None]:
    """``size`` bytes of ``source`` (closed at the end), ``CHUNK`` at a time."""
    if source is None:
        return
    try:
        while size > 0:
            data = await asyncio.to_thread(source.read, min(CHUNK, size))
            if not data:
                return
            size -= len(data)
            yield data
    finally:
        source.close()


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _check_file(path: Path, endpoint: str, models: list[str]) -> Any:
    with path.open("rb") as f:
        return check_input(f, endpoint, models)


def _prepare_folder(folder: Path, source: Path) -> None:
    private_folder(folder.parent.parent, Path(folder.parent.name, folder.name))
    shutil.copyfile(source, folder / INPUT)
    for code in (RUNNER_SOURCE, GUARD_SOURCE):
        shutil.copyfile(code, folder / code.name)


def _new_run(folder: Path, retry_failed: bool = False) -> Optional[Path]:
    """A fresh key, and no exit status, progress or log of an earlier run taken for this one's.
    With ``retry_failed`` the earlier errors move to ``errors.<n>.jsonl`` (returned), so that
    the runner asks those requests again."""
    write_key(folder / KEY_FILE, secrets.token_urlsafe(32))
    (folder / "exit_status").unlink(missing_ok=True)
    (folder / PROGRESS).unlink(missing_ok=True)
    log_file = folder / "job.log"
    if log_file.exists():
        runs = len(list(folder.glob("job.*.log")))
        log_file.rename(folder / f"job.{runs + 1}.log")
    errors = folder / ERRORS
    if not retry_failed or not errors.exists():
        return None
    earlier = folder / f"errors.{len(list(folder.glob('errors.*.jsonl'))) + 1}.jsonl"
    errors.rename(earlier)
    return earlier


def _restore_errors(folder: Path, earlier: Optional[Path]) -> None:
    """Undo ``_new_run``'s move of the errors: the run was never submitted."""
    if earlier is not None and not (folder / ERRORS).exists():
        earlier.rename(folder / ERRORS)


def _with_counts(batch: Batch, counts: tuple[int, int]) -> Batch:
    return apply_counts(batch, *counts)


def _read_all_progress(folders: list[Path]) -> list[Optional[tuple[int, int]]]:
    return [_read_progress(folder) for folder in folders]


def _read_progress(folder: Path) -> Optional[tuple[int, int]]:
    try:
        doc = json.loads((folder / PROGRESS).read_text())
        return int(doc["completed"]), int(doc["failed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def count_results(folder: Path) -> tuple[int, int]:
    """Requests answered well and badly: distinct ``custom_id``s of complete result lines."""
    return len(_ids(folder / OUTPUT)), len(_ids(folder / ERRORS))


def _ids(path: Path) -> set[str]:
    ids = set()
    for raw in _complete_lines(path).splitlines():
        try:
            ids.add(json.loads(raw)["custom_id"])
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def _complete_lines(path: Path) -> bytes:
    """A result file up to its last complete line (a killed job may have torn the last one)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[:data.rfind(b"\n") + 1]


def _complete_size(path: Path, chunk: int = 65536) -> int:
    """``len(_complete_lines(path))`` from the file's end: a batch listing (polled by the
    sidebar) must not read every result file whole."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            while end > 0:
                start = max(0, end - chunk)
                f.seek(start)
                newline = f.read(end - start).rfind(b"\n")
                if newline >= 0:
                    return start + newline + 1
                end = start
    except FileNotFoundError:
        pass
    return 0

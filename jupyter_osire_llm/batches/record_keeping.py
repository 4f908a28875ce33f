"""What the batch service holds: its batch records (mirrored from the store) and the steps every
part of it uses. ``BatchService`` (service.py) is this plus files (``file_api.py``) and what the
monitor observes (``observe.py``)."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable, Optional

from ..core.catalog import Catalog
from ..core.limits import SiteLimits
from ..core.records import CancelRetry, KeepsRecords, RecordMirror
from ..core.render import ScriptRenderer
from ..core.store import Check, Store
from ..errors import Conflict, NotFound, SchedulerError
from ..schedulers.base import Job, JobOwner, Scheduler
from .results import ERRORS, OUTPUT
from .states import Batch, error_file_id, output_file_id

log = logging.getLogger(__name__)
CANCEL_RETRY = 5.0


class BatchRecords(KeepsRecords[Batch]):
    def __init__(self, *, catalog: Catalog, limits: SiteLimits, scheduler: Scheduler,
                 store: Store, renderer: ScriptRenderer, job_root: Path, server_id: str,
                 changed: asyncio.Event, max_batches: int = 4, concurrency: int = 16,
                 max_file_size: int = 200 * 1024 * 1024, file_expiry: float = 0.0,
                 lost_grace: float = 60.0, retry_delay: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.limits, self.scheduler = catalog, limits, scheduler
        self.owner: JobOwner = scheduler.owner()   # jobs of another backend or cluster: theirs
        self.renderer, self.server_id = renderer, server_id
        self.changed, self.clock = changed, clock
        self.lost_grace = lost_grace     # a "vanished" verdict is believed after so many seconds
        self.retry_delay = retry_delay   # the runner's first wait before trying a request again
        self.max_batches, self.concurrency, self.max_file_size = \
            max_batches, concurrency, max_file_size
        self.batch_root, self.file_root = job_root / "batches", job_root / "files"
        self._cancels = CancelRetry(CANCEL_RETRY, clock)
        self.file_expiry, self._swept = file_expiry, float("-inf")
        self.records: RecordMirror[Batch] = RecordMirror(
            store, "batches", encode=Batch.to_doc, decode=Batch.from_doc,
            created=lambda b: float(b.created_at), on_write=self._after_write)
        for batch in self.records.load_now():
            self.records.adopt(batch)

    @property
    def _batches(self) -> dict[str, Batch]:
        return self.records.items

    @property
    def _submitting(self) -> set[str]:
        """Batches this server is submitting a job for right now."""
        return self.records.submitting

    def all(self) -> list[Batch]:
        return sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)

    def get(self, batch_id: str) -> Batch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise NotFound(f"no batch {batch_id!r}", field="batch_id") from None

    async def refresh(self) -> None:
        """Bring in what another Jupyter server of this user wrote."""
        await self.records.refresh()

    async def _mutate(self, batch_id: str, change: Callable[[Batch], Batch],
                      check: Optional[Check] = None) -> Batch:
        """``RecordMirror.mutate``; ``NotFound`` when the batch is gone."""
        self.get(batch_id)
        new = await self.records.mutate(batch_id, change, check)
        if new is None:
            raise NotFound(f"no batch {batch_id!r}", field="batch_id")
        return new

    async def _after_write(self, old: Batch, new: Batch) -> None:
        self.changed.set()

    def _here(self, batch: Batch, action: str) -> None:
        """Refuse to act on a batch whose job another backend or cluster runs: this server can
        neither see nor cancel that job, nor submit to where its folder lives."""
        if not self.owner.owns(batch.owner):
            raise Conflict(f"batch {batch.id} runs on {JobOwner.parse(str(batch.owner)).where}; "
                           f"this server uses {self.owner.where}: {action} it from a server "
                           "there", field="batch_id")

    async def _send_cancel(self, batch: Batch) -> None:
        self._cancels.sent(batch.id)
        try:
            await asyncio.to_thread(self.scheduler.cancel, Job(str(batch.job_id),
                                                               Path(batch.folder)))
        except SchedulerError as exc:   # the monitor sends it again
            log.warning("batch %s: cancel failed, will retry: %s", batch.id, exc.message)
        self.changed.set()

    def _result_owner(self, file_id: str) -> Optional[Batch]:
        for batch in self._batches.values():
            if file_id in (output_file_id(batch.id), error_file_id(batch.id)):
                return batch
        return None

    @staticmethod
    def _result_path(batch: Batch, file_id: str) -> Path:
        return Path(batch.folder) / (OUTPUT if file_id == output_file_id(batch.id) else ERRORS)

"""Uploaded files, the OpenAI Files API subset: kept under ``<job_root>/files/`` with a record
each in the store, expiring; a batch's results are served as files of their own."""
from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any, AsyncGenerator, BinaryIO, Optional

from ..core.private_folder import private_folder
from ..errors import ConfigError, Conflict, NotFound, RequestError, StoreError
from .files import CHUNK, FileUpload, expired, expires_at
from .record_keeping import BatchRecords
from .results import complete_size

log = logging.getLogger(__name__)
PURPOSES = ("batch", "batch_output", "user_data")
SWEEP_EVERY = 60.0   # least seconds between the sweeps of expired files that uploads make


class FileApi(BatchRecords):
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
            await asyncio.to_thread(self.store.insert, "files", file_id, self.clock(), doc)
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
        return [{"expires_at": None, **record.doc}
                for record in await asyncio.to_thread(self.store.load, "files")]

    async def file(self, file_id: str) -> dict[str, Any]:
        batch = self._result_owner(file_id)
        if batch is not None:
            path = self._result_path(batch, file_id)
            size = await asyncio.to_thread(complete_size, path)
            return {"id": file_id, "object": "file", "bytes": size,
                    "created_at": batch.completed_at or batch.failed_at or batch.expired_at or
                    batch.cancelled_at or batch.created_at, "expires_at": None,
                    "filename": path.name, "purpose": "batch_output", "status": "processed",
                    "status_details": None}
        found = await asyncio.to_thread(self.store.load, "files", [file_id])
        if found and expired(found[0].doc, self.clock()) and file_id in await self.sweep_files():
            found = []
        if not found:
            raise NotFound(f"no file {file_id!r}", field="file_id")
        return {"expires_at": None, **found[0].doc}

    async def file_content(self, file_id: str) -> tuple[int, AsyncGenerator[bytes, None]]:
        """A file's size and its bytes in chunks of at most ``CHUNK`` (a batch's results: up to
        their last complete line), never read whole."""
        batch = self._result_owner(file_id)
        if batch is not None:
            path = self._result_path(batch, file_id)
            size = await asyncio.to_thread(complete_size, path)
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
        records = await asyncio.to_thread(self.store.load, "files")
        gone = [r.id for r in records if expired(r.doc, now) and r.id not in in_use]
        for file_id in gone:
            await asyncio.to_thread(self.store.delete, "files", file_id)
            await asyncio.to_thread(_remove_quietly, self.file_root / file_id)
        if gone:
            log.info("deleted %d expired file(s): %s", len(gone), ", ".join(gone))
        return gone

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        if self._result_owner(file_id) is not None:
            raise Conflict("a batch's result file goes with its batch", field="file_id")
        await self.file(file_id)
        await asyncio.to_thread(self.store.delete, "files", file_id)
        await asyncio.to_thread(_remove_quietly, self.file_root / file_id)
        return {"id": file_id, "object": "file", "deleted": True}


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

"""/osire/v1/files and /osire/v1/batches: the OpenAI Files and Batches subset. Thin: the batch
service (``batches.py``) does the work."""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ...errors import OsireError, RequestError, RequestTooLarge
from .base import OsireHandler
from .upload_form import FORM_OVERHEAD, UploadForm


class _BatchHandler(OsireHandler):
    @property
    def batches(self) -> Any:
        return self.osire.batches


@web.stream_request_body
class FilesHandler(_BatchHandler):
    """POST /osire/v1/files (multipart: ``file``, ``purpose``, ``expires_after[...]``), streamed
    to disk: a body over the limit is refused from its Content-Length before it is read, and
    while it streams the moment it passes the limit (413, nothing kept); GET lists them."""

    _form: Optional[UploadForm] = None
    _refused = False

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.request.method != "POST":
            return
        if not self.current_user:
            raise web.HTTPError(403)  # before reading a body nobody may send
        limit = self.batches.max_file_size + FORM_OVERHEAD
        if int(self.request.headers.get("Content-Length") or 0) > limit:
            raise RequestTooLarge(f"upload over the limit of {self.batches.max_file_size} "
                                  "bytes (OsireLLM.max_batch_file_size)", field="file")
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)
        connection.set_max_body_size(2 * limit)   # ours (the form's count) answers first
        upload = await asyncio.to_thread(self.batches.start_upload)
        try:
            self._form = UploadForm(self.request.headers.get("Content-Type", ""), upload)
        except RequestError:
            await asyncio.to_thread(upload.discard)
            raise

    async def data_received(self, chunk: bytes) -> None:
        if self._form is None or self._refused:
            return
        try:
            if self._form.feed(chunk):
                await asyncio.to_thread(self._form.upload.write_held)
        except OsireError as exc:   # answer now; tornado drops the rest and closes
            self._refused = True
            self._discard()
            self.log_exception(type(exc), exc, None)
            self.send_error(exc.status, exc_info=(type(exc), exc, None))

    @web.authenticated
    async def post(self) -> None:
        form = self._form
        assert form is not None
        form.complete()
        self._form = None   # finish_upload keeps or discards it
        self.write_json(await self.batches.finish_upload(
            form.upload, form.filename, form.fields.get("purpose", ""), form.expires_after()))

    def on_finish(self) -> None:
        self._discard()

    def on_connection_close(self) -> None:
        self._discard()   # the caller left mid-upload
        super().on_connection_close()

    def _discard(self) -> None:
        if self._form is not None:
            self._form.upload.discard()
            self._form = None

    @web.authenticated
    async def get(self) -> None:
        files = await self.batches.files()
        purpose = self.get_query_argument("purpose", None)
        data = [f for f in files if purpose in (None, f["purpose"])]
        self.write_json({"object": "list", "data": data, "has_more": False})


class FileHandler(_BatchHandler):
    """GET/DELETE /osire/v1/files/<id>."""

    @web.authenticated
    async def get(self, file_id: str) -> None:
        self.write_json(await self.batches.file(file_id))

    @web.authenticated
    async def delete(self, file_id: str) -> None:
        self.write_json(await self.batches.delete_file(file_id))


class FileContentHandler(_BatchHandler):
    """GET /osire/v1/files/<id>/content: the file's bytes (a batch's results: complete lines),
    sent a chunk at a time as the connection takes them."""

    @web.authenticated
    async def get(self, file_id: str) -> None:
        size, chunks = await self.batches.file_content(file_id)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(size))
        try:
            async for chunk in chunks:
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return   # the caller left
        finally:
            await chunks.aclose()
        self.finish()


class BatchesHandler(_BatchHandler):
    """POST /osire/v1/batches creates one; GET lists them, newest first (``limit``, ``after``)."""

    @web.authenticated
    async def post(self) -> None:
        batch = await self.batches.create(self.json_body())
        self.write_json(await self.batches.view(batch))

    @web.authenticated
    async def get(self) -> None:
        batches = self.batches.all()
        after = self.get_query_argument("after", None)
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        limit = _limit(self.get_query_argument("limit", None))
        page = batches[:limit]
        data = [await self.batches.view(b) for b in page]
        self.write_json({"object": "list", "data": data, "has_more": len(batches) > limit,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None})


class BatchHandler(_BatchHandler):
    """GET /osire/v1/batches/<id>; POST .../cancel; ours: POST .../resume (the rest of a failed,
    expired or cancelled batch) and DELETE (an ended batch, with its results)."""

    @web.authenticated
    async def get(self, batch_id: str) -> None:
        self.write_json(await self.batches.view(self.batches.get(batch_id)))

    @web.authenticated
    async def post(self, batch_id: str, action: Optional[str] = None) -> None:
        if action is None:
            raise web.HTTPError(405)
        batch = await (self.batches.cancel(batch_id) if action == "cancel"
                       else self.batches.resume(batch_id, **_resume_options(self.json_body())))
        self.write_json(await self.batches.view(batch))

    @web.authenticated
    async def delete(self, batch_id: str, action: Optional[str] = None) -> None:
        if action is not None:
            raise web.HTTPError(405)
        self.write_json(await self.batches.delete(batch_id))


def _resume_options(body: dict[str, Any]) -> dict[str, Any]:
    """A resume's body: ``{"retry_failed": false}`` leaves the failed requests failed."""
    unknown = sorted(set(body) - {"retry_failed"})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; a resume takes 'retry_failed'",
                           field=unknown[0])
    return body


def _limit(value: Optional[str]) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise RequestError("'limit' must be a whole number from 1 to 100", field="limit")
    return int(value)


BATCH_HANDLERS = [
    (r"/osire/v1/files/?", FilesHandler),
    (r"/osire/v1/files/(?P<file_id>[^/]+)/content", FileContentHandler),
    (r"/osire/v1/files/(?P<file_id>[^/]+)", FileHandler),
    (r"/osire/v1/batches/?", BatchesHandler),
    (r"/osire/v1/batches/(?P<batch_id>[^/]+)/(?P<action>cancel|resume)", BatchHandler),
    (r"/osire/v1/batches/(?P<batch_id>[^/]+)", BatchHandler),
]

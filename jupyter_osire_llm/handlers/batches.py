"""/osire/v1/files and /osire/v1/batches: the OpenAI Files and Batches subset. Thin: the batch
service (``batches.py``) does the work."""
from __future__ import annotations

from typing import Any, Optional

from tornado import web

from ..errors import RequestError
from .base import OsireHandler


class _BatchHandler(OsireHandler):
    @property
    def batches(self) -> Any:
        return self.osire.batches


class FilesHandler(_BatchHandler):
    """POST /osire/v1/files (multipart: ``file``, ``purpose``); GET lists them."""

    @web.authenticated
    async def post(self) -> None:
        uploads = self.request.files.get("file")
        if not uploads:
            raise RequestError("a multipart field 'file' is required", field="file")
        purpose = self.get_body_argument("purpose", "")
        self.write_json(await self.batches.upload(uploads[0].filename, purpose,
                                                  uploads[0].body))

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
    """GET /osire/v1/files/<id>/content: the file's bytes (a batch's results: complete lines)."""

    @web.authenticated
    async def get(self, file_id: str) -> None:
        data = await self.batches.file_content(file_id)
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(data)


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
                       else self.batches.resume(batch_id))
        self.write_json(await self.batches.view(batch))

    @web.authenticated
    async def delete(self, batch_id: str, action: Optional[str] = None) -> None:
        if action is not None:
            raise web.HTTPError(405)
        self.write_json(await self.batches.delete(batch_id))


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

"""The multipart form of ``POST /osire/v1/files``, parsed as it streams in.

python-multipart's ``MultipartParser`` is a push parser: each piece of the body the connection
delivers is fed to it, the ``file`` part's bytes go straight to a ``FileUpload`` (on disk), and
the small fields (``purpose``, ``expires_after[anchor]``, ``expires_after[seconds]``) are kept.
Nothing of the body is held beyond one piece, so the size limit holds before a large upload is
in memory, and the work is linear in the body's size.
"""
from __future__ import annotations

from typing import Any, Optional

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ...batches.files import FileUpload
from ...errors import RequestError, RequestTooLarge

#: Bytes a form may have beyond its file (boundaries, part headers, the small fields).
FORM_OVERHEAD = 64 * 1024
MAX_FIELD = 1024
MAX_FIELDS = 8


class UploadForm:
    """One upload's form: ``feed`` each piece of the body, then ``complete``."""

    def __init__(self, content_type: str, upload: FileUpload) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise RequestError("an upload is a multipart/form-data body with a 'file' part",
                               field="file")
        self.upload, self.filename = upload, ""
        self.fields: dict[str, str] = {}
        self.body_limit = upload.limit + FORM_OVERHEAD
        self._received, self._done, self._file_seen = 0, False, False
        self._part: Optional[str] = None
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._header = [bytearray(), bytearray()]
        try:
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data,
                "on_part_end": self._part_end, "on_end": self._end})
        except FormParserError as exc:
            raise _malformed(exc) from None

    def feed(self, chunk: bytes) -> bool:
        """Parse the next piece; whether the upload holds enough to be written now.
        ``RequestTooLarge`` past the limits, ``RequestError`` for a malformed form."""
        self._received += len(chunk)
        if self._received > self.body_limit:
            raise RequestTooLarge(f"upload over the limit of {self.upload.limit} bytes "
                                  "(OsireLLM.max_batch_file_size)", field="file")
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise _malformed(exc) from None
        return self.upload.due

    def complete(self) -> None:
        """After the last piece: the form ended and had its file."""
        if not self._done:
            raise RequestError("the multipart form ended early", field="file")
        if not self._file_seen:
            raise RequestError("a multipart field 'file' is required", field="file")

    def expires_after(self) -> Any:
        """The ``expires_after[...]`` fields as a mapping (None when not given)."""
        given = {key[len("expires_after["):-1]: value for key, value in self.fields.items()
                 if key.startswith("expires_after[") and key.endswith("]")}
        return given or None

    # -- parser callbacks --------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers, self._part = {}, None
        self._value.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header[0]).lower()] = bytes(self._header[1])
        self._header = [bytearray(), bytearray()]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self._file_seen:
                raise RequestError("only one 'file' part may be sent", field="file")
            self._file_seen = True
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
        elif len(self.fields) >= MAX_FIELDS:
            raise RequestError(f"at most {MAX_FIELDS} form fields besides 'file'", field=name)
        self._part = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.upload.add(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD:
            raise RequestError(f"form field {self._part!r} is longer than {MAX_FIELD} bytes",
                               field=self._part)

    def _part_end(self) -> None:
        if self._part is not None and self._part != "file":
            self.fields[self._part] = self._value.decode("utf-8", "replace")

    def _end(self) -> None:
        self._done = True


def _malformed(exc: Exception) -> RequestError:
    return RequestError(f"the upload is not a valid multipart form: {exc}", field="file")

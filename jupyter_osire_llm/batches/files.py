"""Uploaded files (the OpenAI Files API subset) on disk: received as they stream in, expiring.

An upload goes to a private temporary file under ``<job_root>/files/`` while it arrives, at most
``CHUNK`` bytes held in memory, and stops with ``RequestTooLarge`` the moment it passes the
site's limit; only a complete upload is renamed to its file id. A file may expire
(``expires_after`` as in the OpenAI API, or the site's default): ``expires_at`` in its record,
after which the batch service deletes it (never while a live batch uses it). No tornado here.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Optional

from ..errors import RequestError, RequestTooLarge, StoreError

CHUNK = 1024 * 1024              # bytes held before a write; bytes per download chunk
EXPIRY_MIN, EXPIRY_MAX = 3600, 2_592_000   # OpenAI's bounds for expires_after.seconds
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileUpload:
    """One upload being received into ``folder`` (blocking file calls: run them in a thread)."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.path = folder / f".upload-{secrets.token_hex(12)}"
        self._buffer = bytearray()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        self._file: Optional[Any] = os.fdopen(fd, "wb")

    def add(self, data: bytes) -> None:
        """Take ``data``; ``RequestTooLarge`` once the file passes the limit."""
        self.size += len(data)
        if self.size > self.limit:
            raise RequestTooLarge(f"file over the limit of {self.limit} bytes "
                                  "(OsireLLM.max_batch_file_size)", field="file")
        self._buffer += data

    @property
    def due(self) -> bool:
        """Whether enough is held for ``write_held`` to be worth a call."""
        return len(self._buffer) >= CHUNK

    def write_held(self) -> None:
        """Write what is held (``StoreError`` when the disk refuses: full, quota)."""
        if self._file is not None and self._buffer:
            try:
                self._file.write(self._buffer)
            except OSError as exc:
                raise StoreError(f"cannot store the upload under {self.path.parent}: "
                                 f"{exc.strerror or exc}") from exc
            self._buffer.clear()

    def keep(self, final: Path) -> None:
        """Write the rest and give the file its final name."""
        self.write_held()
        if self._file is not None:
            self._file.close()
            self._file = None
        os.replace(self.path, final)

    def discard(self) -> None:
        """Forget it (an upload refused or cut off); safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffer.clear()
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


def expires_at(expires_after: Any, created_at: int, default_seconds: float) -> Optional[int]:
    """When a file made at ``created_at`` expires: ``expires_after`` (``{"anchor": "created_at",
    "seconds": N}``, N within OpenAI's bounds; form fields give N as text) or else the site's
    default (0: never). ``RequestError`` naming the field otherwise."""
    if expires_after is None:
        return created_at + int(default_seconds) if default_seconds > 0 else None
    if not isinstance(expires_after, dict) or set(expires_after) != {"anchor", "seconds"}:
        raise RequestError("'expires_after' must give 'anchor' and 'seconds'",
                           field="expires_after")
    if expires_after["anchor"] != "created_at":
        raise RequestError("'expires_after.anchor' must be \"created_at\"",
                           field="expires_after.anchor")
    seconds = expires_after["seconds"]
    if isinstance(seconds, str) and seconds.strip().isdigit():
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or \
            not EXPIRY_MIN <= seconds <= EXPIRY_MAX:
        raise RequestError(f"'expires_after.seconds' must be a whole number from {EXPIRY_MIN} "
                           f"to {EXPIRY_MAX}, got {seconds!r}", field="expires_after.seconds")
    return created_at + seconds


def expired(doc: dict[str, Any], now: float) -> bool:
    return doc.get("expires_at") is not None and doc["expires_at"] <= now

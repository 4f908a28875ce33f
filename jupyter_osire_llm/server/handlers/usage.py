"""GET /osire/api/usage?since=YYYY-MM-DD: tokens, requests, GPU hours and billing per model and
UTC day (``core/usage_log.py``), for every Jupyter server of the user."""
from __future__ import annotations

import re
import time
from datetime import date
from typing import Optional

from tornado import web

from ...core.usage_log import default_since
from ...errors import RequestError
from .base import OsireHandler

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class UsageHandler(OsireHandler):
    @web.authenticated
    async def get(self) -> None:
        since = parse_since(self.get_query_argument("since", None))
        self.write_json(await self.osire.usage.summary(since or default_since(time.time())))


def parse_since(value: Optional[str]) -> Optional[date]:
    """``YYYY-MM-DD`` (None: not given); anything else is a 400 naming ``since``."""
    if value is None or value == "":
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError("not YYYY-MM-DD")
        return date.fromisoformat(value)
    except ValueError:
        raise RequestError(f"since must be a date as YYYY-MM-DD, got {value[:40]!r}",
                           field="since") from None


USAGE_HANDLERS = [(r"/osire/api/usage/?", UsageHandler)]

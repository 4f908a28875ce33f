"""Browser tests drive a `jupyter lab` subprocess, never the in-process pytest-jupyter server.

pytest-jupyter's autouse fixtures would grab and close the thread's current event loop, which
during these tests is the one Playwright's sync API runs on; here they do nothing.
"""
from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    yield None

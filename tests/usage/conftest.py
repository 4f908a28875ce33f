"""The fake engine (tests/fake_engine.py, its own process) behind a static endpoint, and a
Jupyter server with the extension (pytest-jupyter) that routes ``fake`` to it."""
from __future__ import annotations

import os

import pytest

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group, \
    wait_healthy

from usage_support import ENGINE_KEY


@pytest.fixture(scope="module")
def fake_engine():
    port = free_port()
    proc = start_process(fake_engine_command(port, "fake"),
                         env={**os.environ, "VLLM_API_KEY": ENGINE_KEY})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url + "/health", timeout=30, proc=proc)
    yield url
    stop_process_group(proc, grace=5)


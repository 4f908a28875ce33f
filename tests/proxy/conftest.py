"""A Jupyter server with the extension whose static endpoints lead to small controllable engines.

- ``gate``: an in-process aiohttp engine (same event loop as the server) that records every
  request's headers, sends the first stream chunk, then waits on ``release`` before the rest,
  and notes when its handler is cancelled (the client went away).
- ``fake_engine``: tests/fake_engine.py in its own process (module scope).
- ``server``: URL, token and the extension's context. ``proxy_support.FakeSource`` injects
  replicas and not-ready statuses into the router.
"""
from __future__ import annotations

import os

import pytest

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group, \
    wait_healthy
from proxy_support import ENGINE_KEY, FAKE_KEY, GateEngine, Server


@pytest.fixture
def gate(jp_asyncio_loop):
    engine = GateEngine()
    jp_asyncio_loop.run_until_complete(engine.start())
    yield engine
    jp_asyncio_loop.run_until_complete(engine.stop())


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory):
    """tests/fake_engine.py serving ``fake`` with key FAKE_KEY, headers logged to a file."""
    log = tmp_path_factory.mktemp("fake") / "headers.jsonl"
    port = free_port()
    env = {**os.environ, "VLLM_API_KEY": FAKE_KEY, "OSIRE_FAKE_HEADERS_LOG": str(log)}
    proc = start_process(fake_engine_command(port, "fake"), env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url + "/health", timeout=30, proc=proc)
    yield {"url": url, "headers_log": log}
    stop_process_group(proc, grace=5)


@pytest.fixture
def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def jp_server_config(tmp_path, gate, fake_engine, down_url):
    static = {"gate": {"url": gate.url, "api_key": ENGINE_KEY},
              "fake": {"url": fake_engine["url"] + "/v1", "api_key": FAKE_KEY},
              "renamed": {"url": fake_engine["url"], "api_key": FAKE_KEY, "model": "fake"},
              "down": {"url": down_url, "api_key": "k"}}
    return {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
            "OsireLLM": {"scheduler": "local", "job_root": str(tmp_path / "jobs"),
                         "db_path": str(tmp_path / "state.sqlite"), "static_endpoints": static,
                         "proxy_max_body_size": 1024 * 1024}}


@pytest.fixture
def server(jp_serverapp, http_server_client, http_server_port, jp_base_url) -> Server:
    port = http_server_port[0].getsockname()[1]
    return Server(root=f"http://127.0.0.1:{port}{jp_base_url}",
                  token=jp_serverapp.identity_provider.token,
                  context=jp_serverapp.web_app.settings["osire"])

"""A Jupyter server with the extension whose static endpoints lead to small controllable engines.

- ``gate``: an in-process aiohttp engine (same event loop as the server) that records every
  request's headers, sends the first stream chunk, then waits on ``release`` before the rest,
  and notes when its handler is cancelled (the client went away).
- ``fake_engine``: tests/fake_engine.py in its own process (module scope).
- ``server``: URL, token and the extension's context; ``FakeSource`` to inject replicas and
  not-ready statuses into the router.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pytest
from aiohttp import web
from yarl import URL

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group, \
    wait_healthy
from jupyter_osire_llm.endpoints import Endpoint, ModelStatus

ENGINE_KEY = "engine-key-123"
FAKE_KEY = "fake-key-456"


class GateEngine:
    """OpenAI-ish engine whose streams pause after the first chunk until ``release`` is set."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.first_sent = asyncio.Event()
        self.finished = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.delay = 0.0
        self.runner: Optional[web.AppRunner] = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers)})
        return web.Response(text="engine_metric 1\n", content_type="text/plain")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers),
                              "body": body})
        if self.delay:
            await asyncio.sleep(self.delay)
        if not body.get("stream"):
            return web.json_response(completion(body["model"], "hello"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(sse(chunk(body["model"], "first")))
            self.first_sent.set()
            await self.release.wait()
            await resp.write(sse(chunk(body["model"], " second")) + b"data: [DONE]\n\n")
            self.finished.set()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return resp


def completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def chunk(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


@dataclass
class FakeSource:
    """An EndpointSource with replicas and statuses set by the test."""

    endpoints: Sequence[Endpoint] = ()
    statuses: dict[str, ModelStatus] = field(default_factory=dict)

    def ready_endpoints(self, model: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.model == model]

    def model_status(self, model: str) -> Optional[ModelStatus]:
        return self.statuses.get(model)

    def callable_models(self) -> list[str]:
        return sorted({e.model for e in self.endpoints})

    def endpoint_for_deployment(self, deployment_id: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.deployment_id == deployment_id]


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


@dataclass
class Server:
    root: str          # http://127.0.0.1:PORT/<base_url>/
    token: str
    context: Any       # the extension's OsireContext

    @property
    def v1(self) -> str:
        return self.root + "osire/v1"

    def url(self, path: str) -> URL:
        """An aiohttp URL under the server (kept percent-encoded: the base URL is /a%40b/)."""
        return URL(self.root + path, encoded=True)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def server(jp_serverapp, http_server_client, http_server_port, jp_base_url) -> Server:
    port = http_server_port[0].getsockname()[1]
    return Server(root=f"http://127.0.0.1:{port}{jp_base_url}",
                  token=jp_serverapp.identity_provider.token,
                  context=jp_serverapp.web_app.settings["osire"])

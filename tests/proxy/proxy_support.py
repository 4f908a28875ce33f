"""Test doubles for the proxy tests: a gated in-process engine and an injectable EndpointSource."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from aiohttp import web
from yarl import URL

from engine_tools import free_port
from jupyter_osire_llm.proxy.endpoints import Endpoint, ModelStatus

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
        self.headers: dict[str, str] = {}      # extra response headers
        self.runner: Optional[web.AppRunner] = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/docs", self.docs)
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

    async def docs(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers)})
        return web.Response(text="<html><script>fetch('/api/contents')</script></html>",
                            content_type="text/html", headers=self.headers)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers),
                              "body": body})
        if self.delay:
            await asyncio.sleep(self.delay)
        if not body.get("stream"):
            return web.json_response(completion(body["model"], "hello"), headers=self.headers)
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

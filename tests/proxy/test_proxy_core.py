"""UpstreamProxy without tornado: retries, streaming decided by the engine, error translation."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from proxy_support import FakeSource
from engine_tools import free_port
from jupyter_osire_llm.proxy.endpoints import Endpoint
from jupyter_osire_llm.errors import UpstreamError, UpstreamTimeout
from jupyter_osire_llm.proxy.upstream import ProxyConfig, UpstreamProxy
from jupyter_osire_llm.proxy.router import Router


@pytest.fixture
def engine(jp_asyncio_loop):
    """An engine that drops the first connection, then answers; /sse streams; /slow stalls."""
    calls = {"n": 0}

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            request.transport.close()  # dropped before any answer
            await asyncio.sleep(1)
        return web.json_response({"ok": calls["n"]})

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/flaky", flaky)
    app.router.add_post("/v1/sse", sse)
    app.router.add_post("/v1/slow", slow)
    runner = web.AppRunner(app, handler_cancellation=True)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    jp_asyncio_loop.run_until_complete(start())
    yield {"url": f"http://127.0.0.1:{port}", "calls": calls}
    jp_asyncio_loop.run_until_complete(runner.cleanup())


def proxy_for(url: str, **config) -> UpstreamProxy:
    source = FakeSource([Endpoint("m", url, "key", "d", "1")])
    return UpstreamProxy(Router(source), ProxyConfig(retry_backoff=0.001, **config))


async def call(proxy: UpstreamProxy, path: str) -> tuple[int, bool, bytes]:
    async with proxy.for_model("m", None, b"{}", "POST", path, {}) as upstream:
        body = b"".join([c async for c in upstream.chunks()])
        return upstream.status, upstream.streaming, body


async def test_dropped_connection_is_retried_without_leaving_rotation(engine):
    proxy = proxy_for(engine["url"])
    status, streaming, body = await call(proxy, "/v1/flaky")
    assert (status, streaming, body) == (200, False, b'{"ok": 2}')
    assert proxy.router.failed() == [] and proxy.router.in_flight(
        proxy.router.candidates("m")[0]) == 0
    await proxy.close()


async def test_streaming_is_decided_by_the_engine(engine):
    proxy = proxy_for(engine["url"])
    assert await call(proxy, "/v1/sse") == (200, True, b"data: 0\n\ndata: 1\n\ndata: 2\n\n")
    await proxy.close()


async def test_idle_timeout_is_504_and_refused_is_502(engine):
    proxy = proxy_for(engine["url"], idle_timeout=0.2)
    with pytest.raises(UpstreamTimeout):
        await call(proxy, "/v1/slow")
    await proxy.close()
    proxy = proxy_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamError, match="cannot connect") as info:
        await call(proxy, "/v1/flaky")
    assert type(info.value) is UpstreamError and len(proxy.router.failed()) == 1
    await proxy.close()


async def test_probe_loop_returns_healthy_engines_to_rotation(engine):
    proxy = proxy_for(engine["url"], probe_interval=0.05)
    endpoint = proxy.router.candidates("m")[0]
    proxy.router.mark_failed(endpoint)
    await proxy.start()
    for _ in range(100):
        if not proxy.router.failed():
            break
        await asyncio.sleep(0.02)
    assert proxy.router.failed() == []
    await proxy.close()

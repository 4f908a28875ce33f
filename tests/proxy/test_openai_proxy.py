"""/osire/v1 through a real Jupyter server, called with the official openai SDK."""
from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
from typing import Iterator

import aiohttp
import openai
import pytest

from proxy_support import ENGINE_KEY, FAKE_KEY, FakeSource
from engine_tools import fake_engine_command, free_port, start_process, stop_process_group, \
    wait_healthy
from jupyter_osire_llm.proxy.endpoints import Endpoint, ModelStatus
from jupyter_osire_llm.proxy.upstream import ProxyConfig, UpstreamProxy

MESSAGES = [{"role": "user", "content": "hi"}]


def sync_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=server.token, max_retries=0, timeout=20)


def async_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.v1, api_key=server.token, max_retries=0,
                              timeout=20)


async def test_sync_sdk_chat_and_stream(server):
    def call() -> tuple[str, list[str]]:
        client = sync_client(server)
        reply = client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=4)
        stream = client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=5,
                                                stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        return reply.choices[0].message.content, parts

    text, parts = await asyncio.to_thread(call)
    assert text == "t0 t1 t2 t3 "
    assert "".join(parts) == "t0 t1 t2 t3 t4 "


async def test_async_sdk_chat_stream_completions_embeddings(server):
    client = async_client(server)
    reply = await client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=3)
    assert reply.choices[0].message.content == "t0 t1 t2 "
    stream = await client.completions.create(model="fake", prompt="a b", max_tokens=3,
                                             stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == "t0 t1 t2 "
    vectors = await client.embeddings.create(model="fake", input=["a", "b"])
    assert len(vectors.data) == 2
    renamed = await client.chat.completions.create(model="renamed", messages=MESSAGES,
                                                   max_tokens=2)
    assert renamed.choices[0].message.content == "t0 t1 "  # the engine was asked for "fake"
    await client.close()


async def test_models_lists_callable(server):
    server.context.router.source = FakeSource([Endpoint("slurm-model", "http://x", "k", "d1",
                                                        "1")])
    client = async_client(server)
    ids = [m.id async for m in client.models.list()]
    assert ids == ["down", "fake", "gate", "renamed", "slurm-model"]
    assert (await client.models.retrieve("fake")).id == "fake"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")
    await client.close()


async def test_first_chunk_arrives_before_engine_finishes(server, gate):
    client = async_client(server)
    stream = await client.chat.completions.create(model="gate", messages=MESSAGES, stream=True)
    first = await stream.__anext__()
    assert first.choices[0].delta.content == "first"
    assert gate.first_sent.is_set() and not gate.finished.is_set()
    gate.release.set()
    rest = [c.choices[0].delta.content async for c in stream]
    assert rest == [" second"] and gate.finished.is_set()
    await client.close()


async def test_client_disconnect_cancels_engine(server, gate):
    body = {"model": "gate", "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(server.url("osire/v1/chat/completions"), json=body,
                                  headers=server.auth)
        assert resp.status == 200
        assert b"first" in await resp.content.readuntil(b"\n\n")
        resp.close()  # the caller goes away mid-stream
    await asyncio.wait_for(gate.cancelled.wait(), 10)
    assert not gate.finished.is_set()
    assert server.context.router.in_flight(server.context.router.static["gate"]) == 0


@contextmanager
def dying_engine(server, after_chunks: int) -> Iterator[None]:
    """A real fake engine, the only replica of model "dying", that exits mid-stream."""
    port = free_port()
    env = {"VLLM_API_KEY": "k", "OSIRE_FAKE_DIE_AFTER_CHUNKS": str(after_chunks),
           "PATH": "/usr/bin:/bin"}
    proc = start_process(fake_engine_command(port, "dying"), env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", timeout=30, proc=proc)
        server.context.router.source = FakeSource([Endpoint("dying", f"http://127.0.0.1:{port}",
                                                            "k", "d9", "9")])
        yield
    finally:
        stop_process_group(proc, grace=2)


async def test_engine_killed_mid_stream_ends_with_error_event(server, tmp_path):
    with dying_engine(server, after_chunks=3):
        body = {"model": "dying", "messages": MESSAGES, "stream": True, "max_tokens": 10}
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url("osire/v1/chat/completions"), json=body,
                                    headers=server.auth) as resp:
                events = (await asyncio.wait_for(resp.read(), 20)).split(b"\n\n")
        events = [e for e in events if e]
        assert events[-1] == b"data: [DONE]"
        error = json.loads(events[-2][len(b"data: "):])["error"]
        assert error["code"] == "upstream_disconnected" and error["type"] == "upstream_error"
        assert sum(b'"content":"t' in e for e in events) == 3


async def test_engine_killed_mid_stream_raises_in_sdk(server):
    with dying_engine(server, after_chunks=2):
        client = async_client(server)
        stream = await client.chat.completions.create(model="dying", messages=MESSAGES,
                                                      stream=True, max_tokens=10)
        with pytest.raises(openai.APIError, match="closed the connection"):
            async for _ in stream:
                pass
        await client.close()


async def test_retry_on_another_replica_when_one_refuses(server, gate, down_url):
    router = server.context.router
    dead = Endpoint("multi", down_url, "k", "d1", "1")
    alive = Endpoint("multi", gate.url, ENGINE_KEY, "d1", "2")
    router.source = FakeSource([dead, alive])
    router.acquire(alive)  # busier: power-of-two-choices tries the dead one first
    client = async_client(server)
    reply = await client.chat.completions.create(model="multi", messages=MESSAGES)
    assert reply.choices[0].message.content == "hello"
    assert router.failed() == [dead]
    router.release(alive)
    for _ in range(3):  # out of rotation: never tried again while it fails its health check
        await client.chat.completions.create(model="multi", messages=MESSAGES)
    assert router.failed() == [dead] and len(gate.requests) == 4
    await server.context.proxy.probe_failed()
    assert router.failed() == [dead]  # still down
    await client.close()


async def test_failed_replica_returns_after_health_probe(server, gate):
    router = server.context.router
    endpoint = router.static["gate"]
    router.mark_failed(endpoint)
    await server.context.proxy.probe_failed()
    assert router.failed() == []


async def test_jupyter_token_never_forwarded(server, gate, fake_engine):
    client = async_client(server)
    await client.chat.completions.create(model="gate", messages=MESSAGES)
    await client.chat.completions.create(model="fake", messages=MESSAGES,
                                         extra_headers={"Cookie": f"_xsrf=1; t={server.token}"})
    headers = gate.requests[-1]["headers"]
    assert headers["Authorization"] == f"Bearer {ENGINE_KEY}"
    logged = [json.loads(line) for line in fake_engine["headers_log"].read_text().splitlines()]
    assert logged[-1]["headers"]["authorization"] == f"Bearer {FAKE_KEY}"
    for seen in (headers, logged[-1]["headers"]):
        assert server.token not in json.dumps(seen)
        assert not {"cookie", "x-xsrftoken"} & {h.lower() for h in seen}
    await client.close()


async def test_unknown_model_404_lists_callable(server):
    client = async_client(server)
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    error = info.value.body
    assert "callable models: down, fake, gate, renamed" in error["message"]
    assert error["code"] == "not_found" and error["available"] == ["down", "fake", "gate",
                                                                     "renamed"]
    await client.close()


@pytest.mark.parametrize("state,retry_after", [("queued", "15"), ("starting", "5")])
async def test_not_ready_503_with_retry_after(server, state, retry_after):
    status = ModelStatus("llama", state, "dep42", reason="Priority")
    server.context.router.source = FakeSource(statuses={"llama": status})
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url("osire/v1/chat/completions"), headers=server.auth,
                                json={"model": "llama", "messages": MESSAGES}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == retry_after
            error = (await resp.json())["error"]
    assert f"deployment dep42 is {state} (Priority)" in error["message"]
    assert error["code"] == "model_not_ready" and error["state"] == state


async def test_upstream_down_502(server):
    client = async_client(server)
    for _ in range(2):  # marked failed after the first, still tried: it is the only one
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="down", messages=MESSAGES)
        assert info.value.status_code == 502
        assert "cannot connect" in info.value.body["message"]
    await client.close()


async def test_upstream_idle_timeout_504(server, gate):
    context = server.context
    await context.proxy.close()
    context.proxy = UpstreamProxy(context.router, ProxyConfig(idle_timeout=0.3))
    gate.delay = 2.0
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url("osire/v1/chat/completions"), headers=server.auth,
                                json={"model": "gate", "messages": MESSAGES}) as resp:
            assert resp.status == 504
            assert (await resp.json())["error"]["code"] == "upstream_timeout"
    await context.proxy.close()


async def test_missing_model_and_bad_json_400(server):
    async with aiohttp.ClientSession(headers=server.auth) as session:
        url = server.url("osire/v1/chat/completions")
        async with session.post(url, json={"messages": []}) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "model"
        async with session.post(url, data=b"{nope",
                                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "not valid JSON" in (await r.json())["error"]["message"]


async def test_multipart_requests_are_routed_by_their_model_field(server, fake_engine):
    form = aiohttp.FormData()
    form.add_field("model", "fake")
    form.add_field("file", b"RIFF....", filename="a.wav", content_type="audio/wav")
    async with aiohttp.ClientSession(headers=server.auth) as session:
        async with session.post(server.url("osire/v1/audio/transcriptions"), data=form) as r:
            assert r.status == 404  # routed: the fake engine has no audio route
    logged = json.loads(fake_engine["headers_log"].read_text().splitlines()[-1])
    assert logged["path"] == "/v1/audio/transcriptions"
    assert logged["headers"]["content-type"].startswith("multipart/form-data; boundary=")


async def test_body_over_limit_413(server):
    async with aiohttp.ClientSession(headers=server.auth) as session:
        body = json.dumps({"model": "fake", "prompt": "x" * (2 * 1024 * 1024)})
        async with session.post(server.url("osire/v1/completions"), data=body) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "request_too_large"


async def test_engine_passthrough_with_key(server, gate, fake_engine):
    server.context.router.source = FakeSource([
        Endpoint("g", gate.url, ENGINE_KEY, "dep-g", "1"),
        Endpoint("fake", fake_engine["url"], FAKE_KEY, "dep-f", "2")])
    async with aiohttp.ClientSession(headers=server.auth) as session:
        async with session.get(server.url("osire/engines/dep-g/metrics?x=1")) as r:
            assert r.status == 200 and await r.text() == "engine_metric 1\n"
            assert r.headers["Content-Type"].startswith("text/plain")
        assert gate.requests[-1]["path"] == "/metrics?x=1"
        assert gate.requests[-1]["headers"]["Authorization"] == f"Bearer {ENGINE_KEY}"
        async with session.post(server.url("osire/engines/dep-f/tokenize"),
                                json={"model": "fake", "prompt": "a b c"}) as r:
            assert r.status == 200 and (await r.json())["count"] == 3
        for unknown in ("nope", "static:gate"):  # static endpoints: the site's key, no passthrough
            async with session.get(server.url(f"osire/engines/{unknown}/metrics")) as r:
                assert r.status == 404

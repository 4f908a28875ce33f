"""Tokens counted by the proxy for every inference request through /osire/v1, with the official
``openai`` SDK as the client: JSON answers and streams, with and without ``include_usage`` (the
client sees exactly what it asked for), and the counts equal to the engine's own ``usage``.
Also: a bad ``since`` is a 400 naming it, and the usage route needs Jupyter's credentials."""
from __future__ import annotations

import importlib.util
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import openai
import pytest
from yarl import URL

from usage_support import ENGINE_KEY, static_config

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def jp_server_config(tmp_path, fake_engine):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_osire_llm": True}},
            "OsireLLM": {"scheduler": "local", "job_root": str(tmp_path / "jobs"),
                         "db_path": str(tmp_path / "state.sqlite"),
                         "static_endpoints": static_config(fake_engine)}}


@pytest.fixture
def root(jp_serverapp, http_server_client, http_server_port, jp_base_url) -> str:
    return f"http://127.0.0.1:{http_server_port[0].getsockname()[1]}{jp_base_url}"


@pytest.fixture
def token(jp_serverapp) -> str:
    return jp_serverapp.identity_provider.token


async def usage(root: str, token: str, **params: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        query = "?" + urlencode(params) if params else ""
        async with session.get(URL(root + "osire/api/usage" + query, encoded=True),
                               headers={"Authorization": f"token {token}"}) as resp:
            return resp.status, await resp.json()


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


async def test_tokens_of_streams_and_answers_are_counted(root, token, fake_engine):
    client = openai.AsyncOpenAI(base_url=root + "osire/v1", api_key=token, max_retries=0)
    expected = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def add(u) -> None:
        expected["requests"] += 1
        expected["prompt_tokens"] += u.prompt_tokens
        expected["completion_tokens"] += u.completion_tokens

    answer = await client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=5)
    add(answer.usage)                              # the engine's own usage, as the SDK reads it
    plain = await client.completions.create(model="fake", prompt="one two three", max_tokens=3)
    add(plain.usage)

    # A stream that asked for usage: the client gets the usage chunk, as it asked.
    chunks = [c async for c in await client.chat.completions.create(
        model="fake", messages=MESSAGES, max_tokens=7, stream=True,
        stream_options={"include_usage": True})]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])
    add(chunks[-1].usage)

    # A stream that did not: no usage chunk reaches it, and its tokens are counted all the same
    # (the same request's usage, as the engine gives it to a JSON answer).
    chunks = [c async for c in await client.chat.completions.create(
        model="fake", messages=MESSAGES, max_tokens=6, stream=True)]
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == \
        "".join(f"t{i} " for i in range(6))
    same = await client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=6)
    add(same.usage)
    add(same.usage)
    stream = await client.completions.create(model="fake", prompt="a b", max_tokens=2,
                                             stream=True)
    assert all(c.choices for c in [c async for c in stream])
    expected["requests"] += 1
    expected["prompt_tokens"] += 2
    expected["completion_tokens"] += 2

    with pytest.raises(openai.NotFoundError):     # not answered by an engine: not counted
        await client.chat.completions.create(model="nothing", messages=MESSAGES)

    code, body = await usage(root, token)
    assert code == 200, body
    rows = [r for r in body["usage"] if r["model"] == "fake"]
    assert rows == [{"model": "fake", "day": today(), **expected, "gpu_hours": 0.0,
                     "billing": None}]
    assert {k: body["totals"][k] for k in expected} == expected
    print("counted", expected)


def _events(raw: bytes) -> list[bytes]:
    """The stream's events with the per-request id and time taken out."""
    raw = re.sub(rb'"id":"[^"]*"', b'"id":"x"', raw)
    return re.sub(rb'"created":\d+', b'"created":0', raw).split(b"\n\n")


async def test_the_client_gets_the_engine_s_bytes_less_only_the_usage_event(root, token,
                                                                            fake_engine):
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(URL(root + "osire/v1/chat/completions", encoded=True), json=body,
                                headers={"Authorization": f"token {token}"}) as resp:
            assert resp.status == 200
            through = await resp.read()
        async with session.post(fake_engine + "/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {ENGINE_KEY}"}) as resp:
            direct = await resp.read()
        asked = {**body, "stream_options": {"include_usage": True}}
        async with session.post(URL(root + "osire/v1/chat/completions", encoded=True), json=asked,
                                headers={"Authorization": f"token {token}"}) as resp:
            through_asked = await resp.read()
        async with session.post(fake_engine + "/v1/chat/completions", json=asked,
                                headers={"Authorization": f"Bearer {ENGINE_KEY}"}) as resp:
            direct_asked = await resp.read()
    assert b'"usage"' not in direct and b'"usage"' not in through
    assert _events(through) == _events(direct)
    assert _events(through_asked) == _events(direct_asked)
    assert b'"choices":[],"usage"' in through_asked


async def test_a_bad_since_is_refused_naming_it(root, token):
    for bad in ("yesterday", "2026-13-01", "2026-1-1", "2026-02-30T00:00"):
        code, body = await usage(root, token, since=bad)
        assert code == 400, (bad, body)
        assert body["error"]["param"] == "since" and "since" in body["error"]["message"]
        assert body["error"]["type"] == "invalid_request_error"
    code, body = await usage(root, token, since="2000-01-01")
    assert code == 200 and body["since"] == "2000-01-01"
    code, body = await usage(root, token)
    assert code == 200
    days = (datetime.now(timezone.utc).date() -
            datetime.fromisoformat(body["since"]).date()).days
    assert days == 30 and body["usage"] == [] and body["totals"]["requests"] == 0


def osire_routes(app):
    """The route walk of tests/server/test_auth_all_routes.py (which tries every method of
    every /osire route without credentials)."""
    path = Path(__file__).resolve().parents[1] / "server" / "test_auth_all_routes.py"
    spec = importlib.util.spec_from_file_location("auth_all_routes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.osire_routes(app)


async def test_the_usage_route_needs_jupyter_s_credentials(jp_serverapp, root):
    paths = {path.split("/osire/", 1)[1] for path, _ in osire_routes(jp_serverapp.web_app)}
    assert "api/usage" in paths
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "token wrong"}):
            async with session.get(URL(root + "osire/api/usage", encoded=True),
                                   headers=headers) as resp:
                assert resp.status == 403
                assert json.loads(await resp.read())["error"]["type"] == "authentication_error"

"""The caller's Jupyter credentials never reach an engine, whichever way the caller authenticated,
on every proxied route (deployments and static endpoints); engines cannot set the security
headers of the Jupyter origin; paths cannot climb out of /v1."""
from __future__ import annotations

import json
from urllib.parse import quote

import aiohttp
import pytest

from jupyter_osire_llm.proxy.endpoints import Endpoint
from proxy_support import ENGINE_KEY, FakeSource

CHAT = {"model": "gate", "messages": [{"role": "user", "content": "hi"}]}


async def login_cookies(server, session: aiohttp.ClientSession) -> dict[str, str]:
    """Log in the browser way: the token once in a URL, then only cookies and the XSRF value."""
    async with session.get(server.url(f"api/me?token={server.token}")) as r:
        assert r.status == 200
    async with session.get(server.url("login")) as r:
        pass  # a rendered page sets the _xsrf cookie
    cookies = {c.key: c.value for c in session.cookie_jar}
    assert any(k.startswith("username-") for k in cookies), cookies
    return cookies


def forms_of_auth(server) -> dict[str, dict]:
    t = server.token
    return {
        "authorization-token": {"headers": {"Authorization": f"token {t}"}},
        "authorization-bearer": {"headers": {"Authorization": f"Bearer {t}"}},
        "query-token": {"query": f"token={t}"},
    }


@pytest.mark.parametrize("form", ["authorization-token", "authorization-bearer", "query-token",
                                  "cookie"])
async def test_no_jupyter_credential_reaches_the_engine(server, gate, form):
    gate.release.set()
    server.context.router.source = FakeSource([Endpoint("g", gate.url, ENGINE_KEY, "dep-g", "1")])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        headers = {"Referer": f"{server.root}lab?token={server.token}",
                   "Origin": server.root.rstrip("/"), "Content-Type": "application/json"}
        query = "keep=1"
        if form == "cookie":
            cookies = await login_cookies(server, session)
            xsrf = cookies["_xsrf"].strip('"')
            headers["X-XSRFToken"] = xsrf
            # as a browser sends them (the jar would not match the base URL's %40 path)
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
            query += f"&_xsrf={quote(xsrf, safe='')}"
        else:
            spec = forms_of_auth(server)[form]
            headers.update(spec.get("headers", {}))
            query += "&" + spec["query"] if "query" in spec else ""
        for path in (f"osire/v1/chat/completions?{query}", f"osire/engines/dep-g/metrics?{query}"):
            method = session.post if "chat" in path else session.get
            kwargs = {"data": json.dumps({**CHAT, "model": "gate"})} if "chat" in path else {}
            async with method(server.url(path), headers=headers, **kwargs) as r:
                assert r.status == 200, await r.text()
    assert len(gate.requests) == 2
    seen = json.dumps(gate.requests)
    assert server.token not in seen and "_xsrf" not in seen
    for request in gate.requests:
        assert request["path"].endswith("?keep=1")           # the rest of the query is kept
        names = {name.lower() for name in request["headers"]}
        assert not names & {"cookie", "referer", "origin", "x-xsrftoken"}
        assert request["headers"]["Authorization"] == f"Bearer {ENGINE_KEY}"


async def test_static_endpoint_gets_no_jupyter_token_either(server, gate):
    gate.release.set()
    async with aiohttp.ClientSession() as session:
        url = server.url(f"osire/v1/chat/completions?token={server.token}")
        async with session.post(url, data=json.dumps(CHAT),
                                headers={"Referer": f"http://x/lab?token={server.token}",
                                         "Content-Type": "application/json"}) as r:
            assert r.status == 200
    assert server.token not in json.dumps(gate.requests)


async def test_engine_security_headers_are_not_the_engines_to_set(server, gate):
    gate.headers = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
                    "Content-Security-Policy": "script-src *", "X-Frame-Options": "ALLOWALL",
                    "X-Request-Id": "kept"}
    server.context.router.source = FakeSource([Endpoint("g", gate.url, ENGINE_KEY, "dep-g", "1")])
    async with aiohttp.ClientSession(headers=server.auth) as session:
        async with session.get(server.url("osire/engines/dep-g/docs")) as r:
            assert r.status == 200 and "<script>" in await r.text()
            # Jupyter's own CORS decision (an empty origin for token requests), not the engine's
            assert r.headers.get("Access-Control-Allow-Origin", "") != "*"
            assert "Access-Control-Allow-Credentials" not in r.headers
            policies = r.headers.getall("Content-Security-Policy")
            assert "script-src *" not in policies
            assert any(p.startswith("sandbox") for p in policies), policies
            assert r.headers["X-Request-Id"] == "kept"
            assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_hop_by_hop_headers_named_in_connection_are_not_forwarded(server, gate):
    gate.release.set()
    async with aiohttp.ClientSession(headers=server.auth) as session:
        async with session.post(server.url("osire/v1/chat/completions"), data=json.dumps(CHAT),
                                headers={"Connection": "keep-alive, X-Secret-Hop",
                                         "Content-Type": "application/json",
                                         "X-Secret-Hop": "private", "X-Other": "ok"}) as r:
            assert r.status == 200
    headers = {k.lower(): v for k, v in gate.requests[-1]["headers"].items()}
    assert "x-secret-hop" not in headers and headers["x-other"] == "ok"


@pytest.mark.parametrize("path", ["osire/v1/../x", "osire/v1/%2e%2e/x", "osire/v1/a/%2E./b",
                                  "osire/v1/chat%2fcompletions", "osire/engines/dep-g/%2e%2e/x",
                                  "osire/v1/./chat/completions"])
async def test_dot_segments_are_refused(server, gate, path):
    server.context.router.source = FakeSource([Endpoint("g", gate.url, ENGINE_KEY, "dep-g", "1")])
    async with aiohttp.ClientSession(headers=server.auth) as session:
        async with session.post(server.url(path), data=json.dumps(CHAT)) as r:
            assert r.status in (400, 404), await r.text()
            if r.status == 400:
                assert (await r.json())["error"]["param"] == "path"
    assert gate.requests == []

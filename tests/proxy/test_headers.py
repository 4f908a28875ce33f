"""What crosses the proxy in each direction: the caller's credentials never reach an engine;
of an engine's response headers only an allow-list reaches the Jupyter origin (content, caching,
the engine's request id and rate-limit figures), on every route, streamed or not."""
from __future__ import annotations

import json
import os

import aiohttp
import pytest
from multidict import CIMultiDict

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group, \
    wait_healthy
from jupyter_osire_llm.proxy.endpoints import Endpoint
from jupyter_osire_llm.errors import UpstreamTimeout
from jupyter_osire_llm.proxy.headers import request_headers, response_headers, with_key
from jupyter_osire_llm.proxy.upstream import translate
from proxy_support import FAKE_KEY, FakeSource

# Headers an engine must never set on the Jupyter origin (every value carries "evil").
FORBIDDEN = [
    ("Set-Cookie", "evil=1; Path=/"), ("Set-Cookie", "_xsrf=evil; Path=/"),
    ("Clear-Site-Data", '"cookies", "storage", "evil"'), ("Refresh", "0; url=https://evil.test/"),
    ("WWW-Authenticate", 'Basic realm="evil"'), ("Proxy-Authenticate", 'Basic realm="evil"'),
    ("NEL", '{"report_to": "evil", "max_age": 86400}'),
    ("Report-To", '{"group": "evil", "endpoints": [{"url": "https://evil.test/r"}]}'),
    ("Reporting-Endpoints", 'evil="https://evil.test/r"'),
    ("Link", "<https://evil.test/x.js>; rel=preload; as=script"),
    ("Location", "https://evil.test/login"), ("Location", "//evil.test/login"),
    ("Content-Security-Policy", "script-src * 'unsafe-inline' evil"),
    ("Content-Security-Policy-Report-Only", "default-src evil"),
    ("X-Frame-Options", "ALLOW-FROM https://evil.test"),
    ("Strict-Transport-Security", "max-age=0; evil"),
    ("Access-Control-Allow-Origin", "https://evil.test"),
    ("Access-Control-Allow-Credentials", "true, evil"),
    ("Cross-Origin-Opener-Policy", "unsafe-none; evil"),
    ("Cross-Origin-Resource-Policy", "cross-origin; evil"),
    ("Permissions-Policy", "camera=*, evil=()"), ("Service-Worker-Allowed", "/evil"),
    ("Alt-Svc", 'h2="evil.test:443"'), ("Accept-CH", "evil"),
    ("Content-Disposition", "attachment; filename=evil.html"),
    ("X-XSS-Protection", "0; evil"), ("Server", "evil"), ("X-Engine-Anything", "evil"),
]
# What an engine may say about its answer, and the value the client must see.
ALLOWED = [("Cache-Control", "no-store"), ("ETag", '"ok-etag"'),
           ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
           ("Expires", "Wed, 21 Oct 2015 07:28:00 GMT"), ("Vary", "Accept"),
           ("X-Request-Id", "ok-request-id"), ("OpenAI-Processing-Ms", "12"),
           ("X-RateLimit-Remaining-Requests", "99"), ("Retry-After", "3")]
JSON, SSE = "application/json", "text/event-stream"
ROUTES = {  # name: (method, path, body, expected status and content type)
    "v1": ("POST", "osire/v1/chat/completions", {"model": "hostile", "max_tokens": 2}, 200, JSON),
    "v1-stream": ("POST", "osire/v1/chat/completions",
                  {"model": "hostile", "max_tokens": 2, "stream": True}, 200, SSE),
    "engines": ("GET", "osire/engines/dep-h/v1/models", None, 200, JSON),
    "engines-stream": ("POST", "osire/engines/dep-h/v1/chat/completions",
                       {"model": "hostile", "max_tokens": 2, "stream": True}, 200, SSE),
    "engines-error": ("GET", "osire/engines/dep-h/no-such-route", None, 404, "text/plain"),
}


@pytest.fixture(scope="module")
def hostile_engine():
    """tests/fake_engine.py adding every FORBIDDEN and ALLOWED header to each answer."""
    port = free_port()
    env = {**os.environ, "VLLM_API_KEY": FAKE_KEY,
           "OSIRE_FAKE_RESPONSE_HEADERS": json.dumps(FORBIDDEN + ALLOWED)}
    proc = start_process(fake_engine_command(port, "hostile"), env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url + "/health", timeout=30, proc=proc)
    yield url
    stop_process_group(proc, grace=5)


@pytest.mark.parametrize("route", list(ROUTES))
async def test_engine_headers_pass_only_through_the_allow_list(server, hostile_engine, route):
    method, path, body, status, content_type = ROUTES[route]
    server.context.router.source = FakeSource([Endpoint("hostile", hostile_engine, FAKE_KEY,
                                                        "dep-h", "1")])
    async with aiohttp.ClientSession(headers=server.auth) as session:
        async with session.request(method, server.url(path), json=body) as r:
            text = await r.text()
            assert r.status == status, text
            got = list(r.headers.items())
    sent = [(k.lower(), v) for k, v in got]
    assert not [h for h in sent if "evil" in h[1]], sent              # nothing of FORBIDDEN
    assert "www-authenticate" not in dict(sent) and "refresh" not in dict(sent)
    assert all(not k.startswith(("x-engine", "nel", "report")) for k, _ in sent), sent
    for name, value in ALLOWED:
        assert value in ", ".join(r.headers.getall(name, [])), (name, sent)
    csp = r.headers.getall("Content-Security-Policy")
    assert any(p.startswith("sandbox") for p in csp), csp             # the engine-page sandbox
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Type"].startswith(content_type)
    if content_type != SSE:
        assert int(r.headers["Content-Length"]) == len(text.encode())


def test_caller_credentials_and_hop_by_hop_headers_are_dropped():
    given = {"Authorization": "token jupyter", "Cookie": "a=b", "X-XSRFToken": "x",
             "Host": "login:8888", "Connection": "keep-alive", "Content-Length": "5",
             "Transfer-Encoding": "chunked", "Content-Type": "application/json",
             "Accept": "application/json", "X-Stainless-Lang": "python"}
    out = with_key(request_headers(given), "engine")
    assert out == {"Content-Type": "application/json", "Accept": "application/json",
                   "X-Stainless-Lang": "python", "Authorization": "Bearer engine"}


def test_no_key_means_no_authorization():
    assert "Authorization" not in with_key(request_headers({"Authorization": "x"}), None)


def test_response_headers_drop_hop_by_hop_and_join_repeats():
    upstream = CIMultiDict([("content-type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                            ("content-length", "9"), ("set-cookie", "s=1"), ("vary", "a"),
                            ("Vary", "b")])
    assert response_headers(upstream) == {"content-type": "text/event-stream", "vary": "a, b"}


@pytest.mark.parametrize("location, kept", [
    ("docs/", True), ("../models?x=1", True), ("?page=2", True),
    ("/docs", False), ("//evil.test/x", False), ("https://evil.test/", False),
    ("/\\evil.test", False), ("\\\\evil.test", False), ("javascript:alert(1)", False),
    (" https://evil.test/", False), ("docs/\r\nSet-Cookie: a=1", False)])
def test_only_a_relative_location_below_the_proxied_path_is_kept(location, kept):
    """An absolute path would name a Jupyter page; another host, an open redirect."""
    assert ("location" in response_headers({"Location": location})) is kept


def test_timeouts_translate_to_504():
    endpoint = Endpoint("m", "http://a", None, "d", "1")
    assert isinstance(translate(TimeoutError(), endpoint), UpstreamTimeout)

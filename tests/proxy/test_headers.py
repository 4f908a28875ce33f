"""What crosses the proxy in each direction."""
from __future__ import annotations

from multidict import CIMultiDict

from jupyter_osire_llm.endpoints import Endpoint
from jupyter_osire_llm.errors import UpstreamTimeout
from jupyter_osire_llm.proxy import request_headers, response_headers, translate, with_key


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


def test_timeouts_translate_to_504():
    endpoint = Endpoint("m", "http://a", None, "d", "1")
    assert isinstance(translate(TimeoutError(), endpoint), UpstreamTimeout)

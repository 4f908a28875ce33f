"""Which headers and query parameters cross the proxy, each way.

Towards the engine: the caller's headers minus hop-by-hop ones and the caller's Jupyter
credentials (the engine gets its own key). Back to the caller: only an allow-list of headers that
describe the answer itself.
"""
from __future__ import annotations

from typing import Mapping, Optional
from urllib.parse import unquote_plus, urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade"})
# The caller's Jupyter credentials (and where they may show: a Referer of /lab?token=...) stay on
# the login node; the engine gets its own key.
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "authorization", "cookie", "x-xsrftoken",
                             "x-xsrf-token", "referer", "origin", "expect", "forwarded",
                             "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
                             "x-real-ip"}
# Query parameters jupyter_server reads as credentials.
QUERY_DROP = frozenset({"token", "_xsrf"})
# An engine's answer reaches the Jupyter origin with only what describes the answer itself:
# its content, caching, the engine's request id, rate-limit and retry figures. Everything else
# (cookies, CSP, CORS, Clear-Site-Data, Refresh, WWW-Authenticate, NEL, Link, whatever a browser
# may learn to obey next) is Jupyter's to decide, never the engine's. Content-Length is tornado's,
# for what it actually sends; Location only as a path relative to the proxied one.
RESPONSE_ALLOW = frozenset({"content-type", "content-encoding", "content-language",
                            "content-range", "accept-ranges", "cache-control", "etag",
                            "last-modified", "expires", "vary", "age", "retry-after",
                            "retry-after-ms", "x-request-id", "location"})
RESPONSE_ALLOW_PREFIXES = ("openai-", "x-ratelimit-")
# Whatever an engine serves (its /docs page, say) runs in an opaque origin: no script of it can
# reach the Jupyter origin's cookies, storage or API. Added beside Jupyter's own policy.
ENGINE_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers minus hop-by-hop ones (also those its ``Connection`` names) and
    the caller's Jupyter credentials."""
    named = connection_named(headers)
    drop = REQUEST_DROP | named if named else REQUEST_DROP   # no new set on the usual request
    return {name: value for name, value in headers.items() if name.lower() not in drop}


def connection_named(headers: Mapping[str, str]) -> frozenset[str]:
    """Header names a ``Connection`` header declares hop-by-hop (RFC 9110 7.6.1)."""
    value = ",".join(v for k, v in headers.items() if k.lower() == "connection")
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def upstream_query(query: str) -> str:
    """The caller's query string minus Jupyter's credential parameters; the rest untouched."""
    if not query:
        return ""
    kept = [part for part in query.split("&")
            if part and unquote_plus(part.split("=", 1)[0]) not in QUERY_DROP]
    return "&".join(kept)


def with_key(headers: dict[str, str], key: Optional[str]) -> dict[str, str]:
    if key:
        return {**headers, "Authorization": f"Bearer {key}"}
    return headers


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The engine's headers that pass the allow-list (lower-case names; repeats joined by ', '),
    minus any its ``Connection`` header declares hop-by-hop."""
    named = connection_named(headers)
    out: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        if not allowed_response_header(name, value) or name in named:
            continue
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def allowed_response_header(name: str, value: str) -> bool:
    """Whether an engine's response header (lower-case ``name``) may reach the Jupyter origin."""
    if name == "location":
        return relative_location(value)
    return name in RESPONSE_ALLOW or name.startswith(RESPONSE_ALLOW_PREFIXES)


def relative_location(value: str) -> bool:
    """A redirect that stays below the proxied path: no scheme, no host, no leading slash (that
    would name a Jupyter page), no backslash, space or control character browsers reinterpret."""
    if not value or not value.isascii() or any(c <= " " or c in "\\\x7f" for c in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc and not value.startswith("/")

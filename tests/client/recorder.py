"""Small HTTP servers that see what a client sends where it must not: a recorder (standing in for
an HTTP proxy from ``http_proxy`` or for another host) and a redirector (a server that answers
every request with a redirect elsewhere)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server:
    """A threaded HTTP server on a free loopback port, for the ``with`` statement."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self                                # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Recording(BaseHTTPRequestHandler):
    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.owner.requests.append(                     # type: ignore[attr-defined]
            {"method": self.command, "target": self.path, "headers": dict(self.headers.items()),
             "body": body})
        answer = json.dumps({"object": "list", "data": [], "status": "recorded"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = do_CONNECT = _record

    def log_message(self, *args: Any) -> None:
        pass


class Recorder(_Server):
    """Answers 200 with a JSON list to everything and keeps every request it was sent (as a
    proxy it sees absolute targets, ``GET http://127.0.0.1:PORT/... HTTP/1.1``)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        super().__init__(_Recording)

    def saw(self, secret: str) -> bool:
        """Whether ``secret`` reached it anywhere (target, a header or the body)."""
        return any(secret in r["target"] or secret in repr(r["headers"])
                   or secret.encode() in r["body"] for r in self.requests)


class _Redirecting(BaseHTTPRequestHandler):
    def _redirect(self) -> None:
        owner = self.server.owner                             # type: ignore[attr-defined]
        owner.requests.append({"target": self.path, "headers": dict(self.headers.items())})
        self.send_response(owner.status)
        self.send_header("Location", owner.location.rstrip("/") + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _redirect

    def log_message(self, *args: Any) -> None:
        pass


class Redirector(_Server):
    """Answers every request with ``status`` and ``Location: <location><the same path>``."""

    def __init__(self, location: str, status: int = 307) -> None:
        self.location, self.status = location, status
        self.requests: list[dict[str, Any]] = []
        super().__init__(_Redirecting)


PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY")
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")


def proxied_env(base: dict[str, str], proxy_url: str) -> dict[str, str]:
    """``base`` as on a login node with a site proxy: every proxy variable set, loopback not
    exempted (``no_proxy`` empty, which every client reads as unset)."""
    return {**base, **{name: proxy_url for name in PROXY_VARIABLES},
            **{name: "" for name in NO_PROXY_VARIABLES}}

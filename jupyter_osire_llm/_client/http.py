"""How the client talks to a Jupyter server: ``Server`` (where, and with which token) and one
request over urllib (JSON in and out), the server's error answers rebuilt as the project's
exceptions. Standard library only: it runs in kernels of any environment.

The token goes only to the user's own server: no environment proxy (``http_proxy``,
``https_proxy``, ``all_proxy``, common on login nodes) is ever used, and a redirect to another
origin (scheme, host or port) is followed without ``Authorization`` or cookies."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import errors
from ..errors import AuthenticationFailed, OsireError, ServerUnreachable

# Request headers that carry the caller's credentials: never sent to another origin.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization", "x-xsrftoken")


def origin(url: str) -> tuple[str, str, Optional[int]]:
    """(scheme, host, port) of ``url``, the default port made explicit."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


class _SameOriginCredentials(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, except that a redirect to another origin loses the credentials
    (urllib itself re-sends every header it was given, ``Authorization`` included)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> Optional[urllib.request.Request]:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(new.full_url) != origin(req.full_url):
            for name in [h for h in new.header_items() if h[0].lower() in CREDENTIAL_HEADERS]:
                new.remove_header(name[0])
        return new


def opener() -> urllib.request.OpenerDirector:
    """urllib without the environment's proxies and with credentials kept to one origin."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _SameOriginCredentials)


@dataclass(frozen=True)
class Server:
    """Where the Jupyter server is: ``url`` ends with its base URL and a slash."""

    url: str
    token: str = field(default="", repr=False)
    source: str = ""

    @property
    def api_url(self) -> str:
        return self.url + "osire/api/"

    @property
    def openai_url(self) -> str:
        return self.url + "osire/v1"

    def public(self) -> dict[str, Any]:
        """What may be shown: never the token."""
        return {"url": self.url, "openai_base_url": self.openai_url, "source": self.source,
                "token": "set" if self.token else "none"}


def call(server: Server, method: str, url: str, body: Any = None, timeout: float = 30, *,
          as_bytes: bool = False) -> Any:
    """JSON in and out; ``body`` may be ``(content_type, bytes)``; ``as_bytes``: bytes back."""
    headers = {"Accept": "application/json"}
    if server.token:
        headers["Authorization"] = f"token {server.token}"
    data = None
    if isinstance(body, tuple):
        headers["Content-Type"], data = body
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise error_from_response(err.code, err.read(), url, server) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnreachable(f"cannot reach the Jupyter server at {server.url}: {reason}"
                                ) from None
    if as_bytes:
        return raw
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ServerUnreachable(f"{url} did not answer JSON: is this a Jupyter server?") from None


_OPENER = opener()


def _codes() -> dict[str, type[OsireError]]:
    table: dict[str, type[OsireError]] = {}
    pending: list[type[OsireError]] = [OsireError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            table.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return table


_BY_STATUS: dict[int, type[OsireError]] = {
    400: errors.RequestError, 404: errors.NotFound, 409: errors.Conflict,
    413: errors.RequestTooLarge, 502: errors.UpstreamError, 503: errors.SchedulerError,
    504: errors.UpstreamTimeout}


def error_from_response(status: int, raw: bytes, url: str, server: Server) -> OsireError:
    """The server's answer as one of the project's exceptions (the token never in it)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or f"HTTP {status}")
        code, kind, param = error.get("code"), error.get("type"), error.get("param")
    else:
        message = str(doc.get("message") or "") if isinstance(doc, dict) else ""
        code = kind = param = None
        if status == 404:
            message = (f"{url} not found: is jupyter-osire-llm enabled on the server at "
                       f"{server.url}?")
        message = message or f"HTTP {status}"
    if status in (401, 403) and (kind == "authentication_error" or not isinstance(error, dict)):
        cls: type[OsireError] = AuthenticationFailed
        message = (f"the Jupyter server at {server.url} refused the token ({status}): "
                   f"{message}" if server.token else
                   f"the Jupyter server at {server.url} needs a token ({status}): set OSIRE_TOKEN "
                   f"or OSIRE_TOKEN_FILE")
    else:
        cls = _codes().get(str(code), _BY_STATUS.get(status, OsireError))
    exc = cls(message, field=param if isinstance(param, str) else None)
    exc.status = status
    return exc

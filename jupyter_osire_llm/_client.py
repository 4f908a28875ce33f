"""The client of jupyter-osire-llm: finds your Jupyter server, calls its REST API and `/osire/v1`.

Shared by the ``%osire`` magics, ``jupyter osire`` and :func:`client` / :func:`async_client`.
It runs in kernels, often in another environment than the server, so it imports nothing of
jupyter_server or tornado: the standard library (urllib) for REST, ``openai`` only when asked for
an OpenAI client.

Server discovery, first match wins (:func:`discover`):

1. ``OSIRE_URL`` with ``OSIRE_TOKEN`` (or ``OSIRE_TOKEN_FILE``, a file holding the token);
2. JupyterHub: ``JUPYTERHUB_API_TOKEN`` with ``JUPYTERHUB_SERVICE_URL`` (the single-user server's
   own URL, prefix included), or ``JUPYTERHUB_SERVICE_PREFIX`` on the server found below;
3. the runtime file (``jpserver-<pid>.json``) of the Jupyter server that started this process:
   the kernel's ``JPY_PARENT_PID``, then any ancestor process, then the server whose
   ``/api/kernels`` lists this kernel; failing those, the only running server, or the one whose
   root folder holds the current folder, or the newest.

The URL keeps the server's base URL (``/node/<host>/<port>/`` under Open OnDemand, ``/user/<name>/``
under JupyterHub). The token is kept out of ``repr``, messages and logs.

Errors are the project's exception tree (:mod:`jupyter_osire_llm.errors`), rebuilt from the
server's ``{"error": {"message", "type", "code", "param"}}`` and the HTTP status, plus the ones
only a client meets::

    OsireError
    ├── ... (errors.py: RequestError, NotFound, Conflict, SchedulerError, UpstreamError, ...)
    ├── ServerUnreachable       no answer from the server (connection refused, DNS, TLS)
    │   └── ServerNotFound      no server to talk to was found at all
    ├── AuthenticationFailed    the server refused the token (HTTP 401/403 from Jupyter)
    ├── WaitTimeout             a wait ran past its timeout (the deployment keeps going)
    └── DeploymentFailed        the deployment failed or was stopped while we waited
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from . import errors
from .errors import OsireError

__all__ = ["Server", "OsireClient", "discover", "client", "async_client", "describe",
           "ServerUnreachable", "ServerNotFound", "AuthenticationFailed", "WaitTimeout",
           "DeploymentFailed", "LIVE_STATES", "TERMINAL_STATES"]

LIVE_STATES = ("queued", "starting", "ready", "stopping")
TERMINAL_STATES = ("stopped", "failed")
BATCH_ENDED = ("completed", "failed", "expired", "cancelled")


class ServerUnreachable(OsireError):
    status = 0
    type = "connection_error"
    code = "server_unreachable"


class ServerNotFound(ServerUnreachable):
    code = "server_not_found"


class AuthenticationFailed(OsireError):
    status = 403
    type = "authentication_error"
    code = "authentication_failed"


class WaitTimeout(OsireError):
    type = "timeout"
    code = "wait_timeout"

    def __init__(self, message: str, *, deployment: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.deployment = deployment or {}


class DeploymentFailed(OsireError):
    type = "deployment_error"
    code = "deployment_failed"

    def __init__(self, message: str, *, deployment: Optional[dict[str, Any]] = None,
                 log_tail: str = "") -> None:
        super().__init__(message)
        self.deployment = deployment or {}
        self.log_tail = log_tail


# -- discovery ----------------------------------------------------------------------------------

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


def discover(url: Optional[str] = None, token: Optional[str] = None,
             token_file: Optional[str] = None, env: Optional[dict[str, str]] = None) -> Server:
    """The Jupyter server to talk to (see the module's docstring for the order)."""
    env = dict(os.environ if env is None else env)
    if token is None and token_file:
        token = _read_token_file(token_file)
    if url:
        return Server(_normalise(url), token if token is not None else _token_for(url, env),
                      "given")
    if env.get("OSIRE_URL"):
        found = token if token is not None else _env_token(env)
        return Server(_normalise(env["OSIRE_URL"]),
                      found if found is not None else _token_for(env["OSIRE_URL"], env),
                      "OSIRE_URL")
    servers = running_servers(env)
    if env.get("JUPYTERHUB_API_TOKEN") and (env.get("JUPYTERHUB_SERVICE_URL")
                                            or env.get("JUPYTERHUB_SERVICE_PREFIX")):
        hub_token = token if token is not None else env["JUPYTERHUB_API_TOKEN"]
        if env.get("JUPYTERHUB_SERVICE_URL"):
            return Server(_normalise(env["JUPYTERHUB_SERVICE_URL"]), hub_token, "JupyterHub")
        prefix = "/" + env["JUPYTERHUB_SERVICE_PREFIX"].strip("/") + "/"
        mine = [s for s in servers if s.get("base_url", "/") == prefix]
        chosen = _choose(mine, env) if mine else None
        if chosen:
            return Server(_server_url(chosen[0]), hub_token, "JupyterHub + " + chosen[1])
    chosen = _choose(servers, env)
    if chosen:
        info, how = chosen
        return Server(_server_url(info), token if token is not None else info.get("token", ""),
                      how)
    raise ServerNotFound(
        "no running Jupyter server found: start one (jupyter lab), or set OSIRE_URL and "
        "OSIRE_TOKEN (or OSIRE_TOKEN_FILE)")


def runtime_dirs(env: dict[str, str]) -> list[Path]:
    """Where servers write ``jpserver-*.json``: beside this kernel's connection file first."""
    dirs: list[Path] = []
    connection = _connection_file()
    if connection:
        dirs.append(Path(connection).parent)
    if env.get("JUPYTER_RUNTIME_DIR"):      # what jupyter_core would answer too
        dirs.append(Path(env["JUPYTER_RUNTIME_DIR"]))
    else:
        dirs.append(_default_runtime_dir(env))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _default_runtime_dir(env: dict[str, str]) -> Path:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        return Path(jupyter_runtime_dir())
    except Exception:  # jupyter_core missing or broken: its Linux default
        data = env.get("JUPYTER_DATA_DIR") or os.path.join(
            env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"),
            "jupyter")
        return Path(data) / "runtime"


def running_servers(env: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """The runtime files of live servers (dead pids and unix-socket servers left out)."""
    env = dict(os.environ if env is None else env)
    found: dict[int, dict[str, Any]] = {}
    for folder in runtime_dirs(env):
        for path in sorted(folder.glob("jpserver-*.json")):
            try:
                info = json.loads(path.read_text())
                pid = int(info["pid"])
                info["url"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if pid in found or info.get("sock") or not _alive(pid):
                continue
            info["_mtime"] = path.stat().st_mtime
            found[pid] = info
    return list(found.values())


def _choose(servers: list[dict[str, Any]], env: dict[str, str]
            ) -> Optional[tuple[dict[str, Any], str]]:
    if not servers:
        return None
    by_pid = {int(s["pid"]): s for s in servers}
    parent = env.get("JPY_PARENT_PID", "")
    if parent.isdigit() and int(parent) in by_pid:
        return by_pid[int(parent)], "the server that started this kernel"
    for pid in _ancestors():
        if pid in by_pid:
            return by_pid[pid], "the server this process runs under"
    kernel_id = _kernel_id()
    if kernel_id and len(servers) > 1:
        for info in servers:
            if _lists_kernel(info, kernel_id):
                return info, "the server running this kernel"
    if len(servers) == 1:
        return servers[0], "the only running server"
    cwd = os.path.realpath(os.getcwd())
    holding = [s for s in servers if s.get("root_dir") and
               (cwd + os.sep).startswith(os.path.realpath(s["root_dir"]).rstrip(os.sep) + os.sep)]
    if holding:
        best = max(holding, key=lambda s: (len(os.path.realpath(s["root_dir"])), s["_mtime"]))
        return best, "the server whose root folder holds the current folder"
    return max(servers, key=lambda s: s["_mtime"]), "the newest running server"


def _server_url(info: dict[str, Any]) -> str:
    url = _normalise(info["url"])
    base = "/" + str(info.get("base_url") or "/").strip("/")
    parts = urllib.parse.urlsplit(url)
    if base != "/" and not parts.path.rstrip("/").endswith(base.rstrip("/")):
        url = urllib.parse.urlunsplit(parts._replace(path=base.rstrip("/") + "/"))
    return url


def _normalise(url: str) -> str:
    """``http://host:port/base/`` with a trailing slash; a wildcard bind address made local."""
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.hostname or ""
    if host in ("0.0.0.0", "::", ""):
        netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit((parts.scheme or "http", parts.netloc, path, "", ""))


def _env_token(env: dict[str, str]) -> Optional[str]:
    if "OSIRE_TOKEN" in env:
        return env["OSIRE_TOKEN"]
    if env.get("OSIRE_TOKEN_FILE"):
        return _read_token_file(env["OSIRE_TOKEN_FILE"])
    return None


def _token_for(url: str, env: dict[str, str]) -> str:
    """A URL given without a token: the token of the running server at that URL, if any."""
    token = _env_token(env)
    if token is not None:
        return token
    wanted = _normalise(url)
    for info in running_servers(env):
        if _server_url(info) == wanted or _normalise(info["url"]) == wanted:
            return info.get("token", "")
    return ""


def _read_token_file(path: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise errors.RequestError(f"cannot read the token file {path}: {exc.strerror}",
                                  field="token_file") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _ancestors(limit: int = 64) -> Iterable[int]:
    """This process's parent, grandparent, ... (Linux /proc; elsewhere only the parent)."""
    pid = os.getppid()
    for _ in range(limit):
        if pid <= 1:
            return
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return


def _connection_file() -> Optional[str]:
    try:
        from ipykernel.connect import get_connection_file
        return get_connection_file()
    except Exception:  # not in a kernel, or no ipykernel
        return None


def _kernel_id() -> Optional[str]:
    connection = _connection_file()
    if not connection:
        return None
    name = Path(connection).stem
    return name[len("kernel-"):] if name.startswith("kernel-") else None


def _lists_kernel(info: dict[str, Any], kernel_id: str) -> bool:
    try:
        kernels = _http(Server(_server_url(info), info.get("token", "")), "GET",
                        _server_url(info) + "api/kernels", timeout=5)
    except OsireError:
        return False
    return any(isinstance(k, dict) and k.get("id") == kernel_id for k in kernels or [])


# -- HTTP ---------------------------------------------------------------------------------------

def _http(server: Server, method: str, url: str, body: Any = None, timeout: float = 30, *,
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
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise _error_from_response(err.code, err.read(), url, server) from None
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


def _error_from_response(status: int, raw: bytes, url: str, server: Server) -> OsireError:
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


# -- the client ---------------------------------------------------------------------------------

class OsireClient:
    """The REST API of one Jupyter server (found by :func:`discover` unless given)."""

    def __init__(self, server: Optional[Server] = None, *, timeout: float = 60) -> None:
        self._server = server
        self.timeout = timeout

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = discover()
        return self._server

    def request(self, method: str, path: str, body: Any = None,
                params: Optional[dict[str, Any]] = None) -> Any:
        url = self.server.api_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return _http(self.server, method, url, body, self.timeout)

    # REST, one method per route
    def health(self) -> dict[str, Any]:
        return self.request("GET", "health")

    def models(self) -> list[dict[str, Any]]:
        return self.request("GET", "catalog")["models"]

    def deployments(self) -> list[dict[str, Any]]:
        return self.request("GET", "deployments")["deployments"]

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.request("GET", f"deployments/{_quote(deployment_id)}")

    def launch(self, model: str, *, replicas: int = 1,
               resources: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "replicas": replicas}
        if resources:
            body["resources"] = resources
        return self.request("POST", "deployments", body)

    def stop(self, deployment_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"deployments/{_quote(deployment_id)}")

    def scale(self, deployment_id: str, replicas: int) -> dict[str, Any]:
        """Run ``replicas`` replicas: more are submitted, fewer drain and are then cancelled."""
        return self.request("PATCH", f"deployments/{_quote(deployment_id)}",
                            {"replicas": replicas})

    def logs(self, deployment_id: str, tail: int = 100) -> list[dict[str, Any]]:
        return self.request("GET", f"deployments/{_quote(deployment_id)}/logs",
                            params={"tail": tail})["replicas"]

    # batches: the OpenAI Files and Batches routes under /osire/v1
    def _v1(self, method: str, path: str, body: Any = None, as_bytes: bool = False) -> Any:
        return _http(self.server, method, f"{self.server.openai_url}/{path}", body,
                     self.timeout, as_bytes=as_bytes)

    def upload(self, name: str, data: bytes, purpose: str = "batch") -> dict[str, Any]:
        return self._v1("POST", "files", _multipart({"purpose": purpose}, "file", name, data))

    def create_batch(self, file_id: str, endpoint: str, *, resources: Optional[dict] = None,
                     metadata: Optional[dict] = None) -> dict[str, Any]:
        body: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint,
                                "completion_window": "24h"}
        if resources:
            body["resources"] = resources
        if metadata:
            body["metadata"] = metadata
        return self._v1("POST", "batches", body)

    def batches(self) -> list[dict[str, Any]]:
        return self._v1("GET", "batches?limit=100")["data"]

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._v1("GET", f"batches/{_quote(batch_id)}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._v1("POST", f"batches/{_quote(batch_id)}/cancel")

    def resume_batch(self, batch_id: str) -> dict[str, Any]:
        return self._v1("POST", f"batches/{_quote(batch_id)}/resume")

    def file_content(self, file_id: str) -> bytes:
        return self._v1("GET", f"files/{_quote(file_id)}/content", as_bytes=True)

    def submit_spec(self, spec: Any) -> dict[str, Any]:
        """A ``batch_spec.BatchSpec``: its lines uploaded, its batch created."""
        upload = self.upload(f"{spec.model}-batch.jsonl", spec.jsonl())
        return self.create_batch(upload["id"], spec.endpoint, resources=spec.resources,
                                 metadata=spec.metadata)

    def batch_target(self, target: str, *, cancel: bool = False,
                     resume: bool = False) -> tuple[dict[str, Any], Any]:
        """What ``batch SPEC|BATCH_ID [--cancel|--resume]`` names: a spec file run, or a batch
        followed, cancelled or resumed; the batch and where its results go (a spec's output)."""
        if target.startswith("batch_"):
            b = self.batch(target)
            if cancel:
                b = self.cancel_batch(b["id"])
            elif resume:
                b = self.resume_batch(b["id"])
            return b, None
        if cancel or resume:
            raise errors.RequestError("--cancel and --resume take a batch id (batch_...)",
                                      field="target")
        from .batch_spec import load_spec
        spec = load_spec(Path(target))
        return self.submit_spec(spec), spec.output

    def wait_batch(self, batch_id: str, *, timeout: Optional[float] = None,
                   interval: float = 1.0,
                   on_update: Optional[Callable[[dict[str, Any]], None]] = None
                   ) -> dict[str, Any]:
        """Poll until the batch has ended (whichever way: check its ``status``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            b = self.batch(batch_id)
            if on_update:
                on_update(b)
            if b["status"] in BATCH_ENDED:
                return b
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"batch {batch_id} still {b['status']} after {timeout:g} s; "
                                  "it keeps going")
            time.sleep(interval if deadline is None else
                       max(0.0, min(interval, deadline - time.monotonic())))

    def save_results(self, batch: dict[str, Any], output: Any) -> list[str]:
        """Write the batch's results to ``output`` (a path) and its failed requests beside it
        (``<name>.errors.jsonl``); the paths written."""
        written = []
        for key, path in (("output_file_id", Path(output)),
                          ("error_file_id", Path(output).with_suffix(".errors.jsonl"))):
            if batch.get(key):
                path.write_bytes(self.file_content(batch[key]))
                written.append(str(path))
        return written

    # conveniences
    def find(self, ref: str, *, live_only: bool = False) -> list[dict[str, Any]]:
        """Deployments named by ``ref``: an id, or a model (its live ones, newest first)."""
        everything = self.deployments()
        exact = [d for d in everything if d["id"] == ref]
        if exact:
            return exact
        of_model = sorted((d for d in everything if d["model"] == ref),
                          key=lambda d: d.get("created") or 0, reverse=True)
        live = [d for d in of_model if d["state"] in LIVE_STATES]
        if live or (of_model and not live_only):
            return live or of_model[:1]
        raise errors.NotFound(
            f"no {'live ' if live_only else ''}deployment with id or model {ref!r}" +
            (f" (live: {', '.join(d['id'] + ' ' + d['model'] for d in everything if d['state'] in LIVE_STATES)})"
             if any(d["state"] in LIVE_STATES for d in everything) else ""))

    def wait(self, ref: str, *, timeout: Optional[float] = None, interval: float = 1.0,
             on_update: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
        """Poll until the deployment is ready; :class:`DeploymentFailed` if it ends instead.

        ``on_update`` sees every poll. A KeyboardInterrupt ends the wait, never the deployment.
        """
        deployment_id = self.find(ref)[0]["id"]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            d = self.deployment(deployment_id)
            if on_update:
                on_update(d)
            if d["state"] == "ready":
                return d
            if d["state"] in TERMINAL_STATES:
                tail = "\n".join(r["log_tail"] for r in d.get("replicas", []) if r.get("log_tail"))
                raise DeploymentFailed(f"{d['model']} ({d['id']}) {d['state']}: "
                                       f"{d.get('reason') or 'no reason given'}",
                                       deployment=d, log_tail=tail)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{d['model']} ({d['id']}) still {d['state']} after "
                                  f"{timeout:g} s; it keeps going (stop it with: stop {d['id']})",
                                  deployment=d)
            pause = interval if deadline is None else max(0.0, min(interval,
                                                                   deadline - time.monotonic()))
            time.sleep(pause)

    # OpenAI
    def openai(self, **kwargs: Any) -> Any:
        import openai
        return openai.OpenAI(**self._openai_args(kwargs))

    def async_openai(self, **kwargs: Any) -> Any:
        import openai
        return openai.AsyncOpenAI(**self._openai_args(kwargs))

    def _openai_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # The SDK sends "Authorization: Bearer <api_key>", which Jupyter accepts as its token.
        return {"base_url": self.server.openai_url, "api_key": self.server.token or "none",
                **kwargs}


def _multipart(fields: dict[str, str], file_field: str, filename: str,
               data: bytes) -> tuple[str, bytes]:
    """A multipart/form-data body (what the OpenAI SDK sends to /files)."""
    boundary = f"osire-{os.urandom(12).hex()}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields.items()]
    safe = filename.replace('"', "").replace("\r", "").replace("\n", "")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                 f'filename="{safe}"\r\nContent-Type: application/jsonl\r\n\r\n'.encode()
                 + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + \
        f"--{boundary}--\r\n".encode()


def _quote(value: str) -> str:
    return urllib.parse.quote(str(value), safe="")


def client(**kwargs: Any) -> Any:
    """An ``openai.OpenAI`` pointed at this Jupyter server's ``/osire/v1``, token included.

    Keyword arguments go to ``openai.OpenAI`` (``timeout``, ``max_retries``, ...).
    """
    return OsireClient().openai(**kwargs)


def async_client(**kwargs: Any) -> Any:
    """An ``openai.AsyncOpenAI`` pointed at this Jupyter server's ``/osire/v1``."""
    return OsireClient().async_openai(**kwargs)


# -- progress in words --------------------------------------------------------------------------

def describe(d: dict[str, Any], now: Optional[float] = None) -> str:
    """One line on a deployment's progress: state, Slurm's reason and estimate, elapsed time."""
    now = time.time() if now is None else now
    replicas = d.get("replicas") or []
    head = f"{d['model']} ({d['id']}): {d['state']}"
    if d["state"] == "queued":
        reasons = sorted({r["reason"] for r in replicas if r.get("reason")})
        starts = [r["estimated_start"] for r in replicas if r.get("estimated_start")]
        parts = []
        if reasons:
            parts.append("reason " + ", ".join(reasons))
        if starts:
            start = min(starts)
            when = time.strftime("%H:%M", time.localtime(start))
            parts.append(f"estimated start {when}" +
                         (f" (in {_duration(start - now)})" if start > now else ""))
        parts.append(f"waiting {_duration(now - (d.get('created') or now))}")
        return head + ", " + ", ".join(parts)
    if d["state"] == "starting":
        started = [r["started_at"] for r in replicas if r.get("started_at")]
        since = min(started) if started else d.get("created") or now
        return head + f", {_duration(now - since)} since the job started"
    if d["state"] == "ready":
        ready = [r["ready_at"] for r in replicas if r.get("ready_at")]
        took = (max(ready) - d["created"]) if ready and d.get("created") else None
        return head + (f" after {_duration(took)}" if took is not None else "")
    if d.get("reason"):
        return head + f": {d['reason']}"
    return head


def describe_batch(b: dict[str, Any], now: Optional[float] = None) -> str:
    """One line on a batch: status, requests done of the total, Slurm's reason or why it ended."""
    now = time.time() if now is None else now
    counts, extra = b["request_counts"], b.get("osire") or {}
    line = f"{b.get('model', '')} batch ({b['id']}): {b['status']}, " \
           f"{counts['completed']}/{counts['total']} done"
    if counts.get("failed"):
        line += f", {counts['failed']} failed"
    if b["status"] == "queued" and extra.get("reason"):
        line += f", reason {extra['reason']}, waiting {_duration(now - b['created_at'])}"
    elif b["status"] == "in_progress" and b.get("in_progress_at"):
        line += f", running {_duration(now - b['in_progress_at'])}"
    elif b["status"] in ("failed", "expired") and extra.get("reason"):
        line += f": {extra['reason']}"
    return line


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

"""The client of jupyter-osire-llm: calls your Jupyter server's REST API and `/osire/v1`.

Shared by the ``%osire`` magics, ``jupyter osire`` and :func:`client` / :func:`async_client`.
It runs in kernels, often in another environment than the server, so it imports nothing of
jupyter_server or tornado: the standard library (urllib) for REST, ``openai`` only when asked for
an OpenAI client. Its rooms: ``_discovery`` finds the server (:func:`discover`), ``_http`` talks
to it, ``_describe`` puts progress in words.

Errors are the project's exception tree (:mod:`jupyter_osire_llm.errors`), rebuilt from the
server's ``{"error": {"message", "type", "code", "param"}}`` and the HTTP status, plus the ones
only a client meets (``ServerUnreachable``, ``ServerNotFound``, ``AuthenticationFailed``,
``WaitTimeout``, ``DeploymentFailed``).
"""
from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Optional

from .. import errors
from ..errors import (
    AuthenticationFailed,
    DeploymentFailed,
    ServerNotFound,
    ServerUnreachable,
    WaitTimeout,
)
from .describe import describe, describe_batch
from .discovery import discover
from .http import Server, call

__all__ = ["Server", "OsireClient", "discover", "client", "async_client", "describe",
           "describe_batch", "ServerUnreachable", "ServerNotFound", "AuthenticationFailed", "WaitTimeout",
           "DeploymentFailed", "LIVE_STATES", "TERMINAL_STATES"]

LIVE_STATES = ("queued", "starting", "ready", "stopping")
TERMINAL_STATES = ("stopped", "failed")
BATCH_ENDED = ("completed", "failed", "expired", "cancelled")


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
                params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        url = self.server.api_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        answer: dict[str, Any] = call(self.server, method, url, body, self.timeout)
        return answer

    # REST, one method per route
    def health(self) -> dict[str, Any]:
        return self.request("GET", "health")

    def models(self) -> list[dict[str, Any]]:
        return _items(self.request("GET", "catalog"), "models")

    def usage(self, since: Optional[str] = None) -> dict[str, Any]:
        """Requests, tokens, GPU hours and billing per model and UTC day since ``since``
        (``YYYY-MM-DD``; default: 30 days back): ``{"since", "usage": [rows], "totals"}``."""
        return self.request("GET", "usage", params={"since": since} if since else None)

    def deployments(self) -> list[dict[str, Any]]:
        return _items(self.request("GET", "deployments"), "deployments")

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.request("GET", f"deployments/{_quote(deployment_id)}")

    def launch(self, model: str, *, replicas: int = 1,
               resources: Optional[dict[str, Any]] = None, force: bool = False,
               model_path: Optional[str] = None, name: Optional[str] = None) -> dict[str, Any]:
        """``force``: launch even where the model's size says the GPUs cannot hold it.
        ``model_path`` (and ``name``): your own model folder, run with ``model``'s engine."""
        body: dict[str, Any] = {"model": model, "replicas": replicas,
                                **({"model_path": model_path} if model_path else {}),
                                **({"name": name} if name else {})}
        if resources:
            body["resources"] = resources
        if force:
            body["force"] = True
        return self.request("POST", "deployments", body)

    def estimate(self, model: str, *, replicas: int = 1,
                 resources: Optional[dict[str, Any]] = None, model_path: Optional[str] = None,
                 name: Optional[str] = None) -> dict[str, Any]:
        """What launching would cost and when it would start (nothing is submitted): ``fits``,
        ``within_limits``, ``start``, ``gpu_hours``, ``billing``, ``summary``, ``confirm``."""
        body: dict[str, Any] = {"model": model, "replicas": replicas,
                                **({"model_path": model_path} if model_path else {}),
                                **({"name": name} if name else {})}
        if resources:
            body["resources"] = resources
        return self.request("POST", "deployments/estimate", body)

    def stop(self, deployment_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"deployments/{_quote(deployment_id)}")

    def scale(self, deployment_id: str, replicas: int) -> dict[str, Any]:
        """Run ``replicas`` replicas: more are submitted, fewer drain and are then cancelled."""
        return self.request("PATCH", f"deployments/{_quote(deployment_id)}",
                            {"replicas": replicas})

    def logs(self, deployment_id: str, tail: int = 100) -> list[dict[str, Any]]:
        return _items(self.request("GET", f"deployments/{_quote(deployment_id)}/logs",
                                   params={"tail": tail}), "replicas")

    # batches: the OpenAI Files and Batches routes under /osire/v1
    def _v1(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer: dict[str, Any] = call(self.server, method, f"{self.server.openai_url}/{path}",
                                      body, self.timeout)
        return answer

    def upload(self, name: str, data: bytes, purpose: str = "batch") -> dict[str, Any]:
        return self._v1("POST", "files", _multipart({"purpose": purpose}, "file", name, data))

    def create_batch(self, file_id: str, endpoint: str, *,
                     resources: Optional[dict[str, Any]] = None,
                     metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        body: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint,
                                "completion_window": "24h"}
        if resources:
            body["resources"] = resources
        if metadata:
            body["metadata"] = metadata
        return self._v1("POST", "batches", body)

    def batches(self) -> list[dict[str, Any]]:
        return _items(self._v1("GET", "batches?limit=100"), "data")

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._v1("GET", f"batches/{_quote(batch_id)}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._v1("POST", f"batches/{_quote(batch_id)}/cancel")

    def resume_batch(self, batch_id: str, retry_failed: bool = True) -> dict[str, Any]:
        """Run the rest of an ended batch, and its failed requests again unless told not to."""
        return self._v1("POST", f"batches/{_quote(batch_id)}/resume",
                        None if retry_failed else {"retry_failed": False})

    def file_content(self, file_id: str) -> bytes:
        content: bytes = call(self.server, "GET",
                              f"{self.server.openai_url}/files/{_quote(file_id)}/content",
                              None, self.timeout, as_bytes=True)
        return content

    def submit_spec(self, spec: Any) -> dict[str, Any]:
        """A ``batch_spec.BatchSpec``: its lines uploaded, its batch created."""
        upload = self.upload(f"{spec.model}-batch.jsonl", spec.jsonl())
        return self.create_batch(upload["id"], spec.endpoint, resources=spec.resources,
                                 metadata=spec.metadata)

    def delete_batch(self, batch_id: str) -> dict[str, Any]:
        """Forget an ended batch and remove its results (ours; OpenAI has no such route)."""
        return self._v1("DELETE", f"batches/{_quote(batch_id)}")

    def batch_target(self, target: str, *, cancel: bool = False, resume: bool = False,
                     delete: bool = False, retry_failed: bool = True
                     ) -> tuple[dict[str, Any], Any]:
        """What ``batch SPEC|BATCH_ID [--cancel|--resume|--delete]`` names: a spec file run, or
        a batch followed, cancelled, resumed or deleted; the batch (or the deletion) and where
        its results go (a spec's output)."""
        if not retry_failed and not resume:
            raise errors.RequestError("--no-retry-failed goes with --resume",
                                      field="retry_failed")
        if target.startswith("batch_"):
            if delete:
                return self.delete_batch(target), None
            b = self.batch(target)
            if cancel:
                b = self.cancel_batch(b["id"])
            elif resume:
                b = self.resume_batch(b["id"], retry_failed)
            return b, None
        if cancel or resume or delete:
            raise errors.RequestError("--cancel, --resume and --delete take a batch id "
                                      "(batch_...)", field="target")
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
        from .batch_spec import errors_path, write_result
        written = []
        for key, path in (("output_file_id", Path(output)), ("error_file_id",
                                                             errors_path(Path(output)))):
            if batch.get(key):
                write_result(path, self.file_content(batch[key]))   # never through a symlink
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
        """An ``openai.OpenAI`` for ``/osire/v1``; it never uses an environment proxy."""
        import openai
        if "http_client" not in kwargs:
            kwargs["http_client"] = openai.DefaultHttpxClient(trust_env=False)
        return openai.OpenAI(**self._openai_args(kwargs))

    def async_openai(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` for ``/osire/v1``; it never uses an environment proxy."""
        import openai
        if "http_client" not in kwargs:
            kwargs["http_client"] = openai.DefaultAsyncHttpxClient(trust_env=False)
        return openai.AsyncOpenAI(**self._openai_args(kwargs))

    def _openai_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # The SDK sends "Authorization: Bearer <api_key>", which Jupyter accepts as its token.
        # Its own HTTP client (the SDK's defaults: timeouts, limits, redirects that drop
        # Authorization on another origin) with trust_env=False: the token never goes through
        # http_proxy / https_proxy / all_proxy, and no .netrc is read.
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


def _items(answer: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = answer[key]
    return items


def client(**kwargs: Any) -> Any:
    """An ``openai.OpenAI`` pointed at this Jupyter server's ``/osire/v1``, token included.

    Keyword arguments go to ``openai.OpenAI`` (``timeout``, ``max_retries``, ...). No
    environment proxy is used (the server is the user's own); an ``http_client`` given here is
    used as it is.
    """
    return OsireClient().openai(**kwargs)


def async_client(**kwargs: Any) -> Any:
    """An ``openai.AsyncOpenAI`` pointed at this Jupyter server's ``/osire/v1``."""
    return OsireClient().async_openai(**kwargs)

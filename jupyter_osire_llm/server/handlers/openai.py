"""/osire/v1 (OpenAI-compatible, routed by ``model``) and /osire/engines (engine passthrough).

Thin: the router picks the engine, the proxy talks to it; these handlers read the body, relay
status, headers and chunks (flushed one by one), and stop the engine when the caller leaves.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncContextManager, Callable, Optional
from urllib.parse import unquote

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ...errors import MethodNotAllowed, OsireError, RequestError, RequestTooLarge, UpstreamError
from ...proxy.headers import ENGINE_CSP, upstream_query
from ...proxy.upstream import UpstreamResponse
from ...proxy.usage import RequestUsage, plan_usage
from .base import OsireHandler

Opener = Callable[[], AsyncContextManager[UpstreamResponse]]


class ModelsHandler(OsireHandler):
    """GET /osire/v1/models[/<name>]: what can be called now, in the OpenAI format."""

    @web.authenticated
    def get(self, name: Optional[str] = None) -> None:
        router = self.osire.router
        if name is None:
            models = [_model(m) for m in router.callable_models()]
            self.write_json({"object": "list", "data": models})
        else:
            router.resolve(name)  # the precise 404 (or 503) when it cannot be called now
            self.write_json(_model(name))


@web.stream_request_body
class _RelayHandler(OsireHandler):
    """Body read under the proxy's own size limit, then relayed with cancel-on-disconnect."""

    _chunks: list[bytes]
    _task: Optional[asyncio.Task[None]] = None

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.request.method != "OPTIONS" and not self.current_user:
            raise web.HTTPError(403)  # before reading a body nobody may send
        limit = self.osire.proxy.config.max_body_size
        if int(self.request.headers.get("Content-Length") or 0) > limit:
            raise RequestTooLarge(f"request body over the limit of {limit} bytes", field="body")
        self._connection().set_max_body_size(limit)
        self._chunks = []

    def _connection(self) -> HTTP1Connection:
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)  # tornado's HTTP/1 server is the only one
        return connection

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def body(self) -> bytes:
        return b"".join(self._chunks)

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, UpstreamError):  # an engine's trouble, not ours: no traceback
            self.log.warning("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def on_connection_close(self) -> None:
        if self._task is not None:
            self._task.cancel()  # the engine sees the disconnect and stops generating

    async def relay(self, opener: Opener, usage: Optional[RequestUsage] = None) -> None:
        """``usage``: an inference request's token count, read from the answer as it passes
        (the proxy's usage event taken out where the caller did not ask for it)."""
        self._task = asyncio.ensure_future(self._pump(opener, usage))
        try:
            await self._task
        except (asyncio.CancelledError, StreamClosedError):
            pass  # the caller went away; nothing left to answer
        finally:
            self._task = None

    async def _pump(self, opener: Opener, usage: Optional[RequestUsage]) -> None:
        async with opener() as upstream:
            try:
                await self._answer(upstream, usage)
            finally:
                if usage is not None:
                    usage.close(upstream.status)

    async def _answer(self, upstream: UpstreamResponse, usage: Optional[RequestUsage]) -> None:
        self.set_status(upstream.status)
        for name, value in upstream.headers.items():
            self.set_header(name, value)
        self.add_header("Content-Security-Policy", ENGINE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        content_type = upstream.content_type or "application/octet-stream"
        if not upstream.streaming:
            body = await upstream.read()
            if usage is not None:
                usage.answer(body)
            if body:
                self.write(body)
            self.finish(set_content_type=content_type)
            return
        if not upstream.event_stream:
            usage = None    # only event streams carry a usage event
        # Nagle off while streaming (tornado turns it back on after the response): a token
        # must not wait for the ACK of the one before.
        self._connection().stream.set_nodelay(True)
        try:
            async for chunk in upstream.chunks():
                if usage is not None:
                    chunk = usage.feed(chunk)
                    if not chunk:
                        continue
                self.write(chunk)
                await self.flush()
        except UpstreamError as exc:
            if not upstream.event_stream:
                raise
            self.log.warning("osire: stream from %s ended early: %s",
                             upstream.endpoint.url, exc.message)
            self.write((usage.finish() if usage is not None else b"") + _sse_error(exc))
        else:
            if usage is not None:   # the end of a last event without its blank line
                self.write(usage.finish())
        self.finish(set_content_type=content_type)


class OpenAIHandler(_RelayHandler):
    """Any /osire/v1/<path>, routed by ``model`` (JSON body or query) to a ready replica.

    POST only, as the OpenAI API's inference routes: a GET (a link, an image tag on another
    site, a prefetch) never reaches an engine nor launches a model on demand. The routes that
    are read with GET (models, files, batches) have their own handlers."""

    @web.authenticated
    async def post(self, path: str) -> None:
        upstream_path = _with_query("/v1/" + _raw_tail(self.request.path, "/osire/v1/"),
                                    self.request.query)
        body = self.body()
        content_type = self.request.headers.get("Content-Type", "")
        payload = _json_object(body) if body and _is_json(content_type) else None
        model = ((payload or {}).get("model") or _form_field(content_type, body, "model")
                 or self.get_query_argument("model", None))
        if not isinstance(model, str) or not model:
            raise RequestError("no model given: put 'model' in the JSON body (sent as "
                               "Content-Type: application/json) or the query",
                               field="model")
        if self.osire.policies is not None:   # launch on demand, if the site allows it
            await self.osire.on_demand.before_request(model)
        asked, usage = plan_usage(self.osire.usage.tally, model, upstream_path, payload)
        if asked is not None:   # a stream: the engine is asked for its usage event too
            payload, body = asked, json.dumps(asked).encode()
        await self.relay(lambda: self.osire.proxy.for_model(
            model, payload, body, self.request.method, upstream_path, self.request.headers),
            usage)

    @web.authenticated
    def get(self, path: str) -> None:
        raise MethodNotAllowed(f"{self.request.method} is not allowed on /osire/v1/{path}: "
                               "OpenAI inference routes take POST", field="method",
                               allow="POST")

    head = put = patch = delete = get


class EngineHandler(_RelayHandler):
    """/osire/engines/<deployment>/<path>: any engine route of one deployment, with its key."""

    @web.authenticated
    async def get(self, deployment_id: str, path: str) -> None:
        tail = _raw_tail(self.request.path, "/osire/engines/")
        upstream_path = _with_query(tail[tail.index("/"):], self.request.query)
        await self.relay(lambda: self.osire.proxy.for_deployment(
            deployment_id, self.body(), self.request.method, upstream_path, self.request.headers))

    post = put = patch = delete = get


def _raw_tail(path: str, marker: str) -> str:
    """What follows ``marker`` in the still percent-encoded request path, refused when a
    segment (once decoded) could climb out of it: ``.``, ``..``, an encoded slash or NUL."""
    tail = path[path.index(marker) + len(marker):]
    for segment in tail.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or any(c in decoded for c in "/\\\0"):
            raise RequestError(f"path segment {segment!r} is not allowed in a proxied path",
                               field="path")
    return tail


def _with_query(path: str, query: str) -> str:
    """The path with the caller's query minus Jupyter's credentials (``token``, ``_xsrf``)."""
    query = upstream_query(query)
    return f"{path}?{query}" if query else path


def _is_json(content_type: str) -> bool:
    return not content_type or content_type.split(";")[0].strip().lower().endswith("json")


def _form_field(content_type: str, body: bytes, name: str) -> Optional[str]:
    """A field of a multipart or urlencoded form (audio transcription sends ``model`` so)."""
    if not body or not content_type.startswith(("multipart/form-data",
                                                "application/x-www-form-urlencoded")):
        return None
    fields: dict[str, list[bytes]] = {}
    httputil.parse_body_arguments(content_type, body, fields, {})
    values = fields.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", field="body") from exc
    if not isinstance(payload, dict):
        raise RequestError("request body must be a JSON object", field="body")
    return payload


def _sse_error(exc: OsireError) -> bytes:
    """The last event of a stream whose engine failed: vLLM's in-stream error shape."""
    return b"data: " + json.dumps(exc.to_openai()).encode() + b"\n\ndata: [DONE]\n\n"


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "osire"}


OPENAI_HANDLERS = [
    (r"/osire/v1/models/?", ModelsHandler),
    (r"/osire/v1/models/(?P<name>.+)", ModelsHandler),
    (r"/osire/v1/(?P<path>.*)", OpenAIHandler),
    (r"/osire/engines/(?P<deployment_id>[^/]+)/(?P<path>.*)", EngineHandler),
]

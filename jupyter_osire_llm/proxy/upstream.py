"""Forwarding one request to an engine: one shared aiohttp session, retries, error translation.

No tornado here: handlers give a method, a path, headers and a body, and get back an
``UpstreamResponse`` (status, headers, whether it streams, an async iterator of byte chunks).
Streaming is decided from the upstream response, never from the caller's ``Accept``.

aiohttp was chosen for the upstream client after measuring it here against a shared
``httpx.AsyncClient`` at 64 concurrent requests to the fake engine: about 5,000 req/s against
about 430 req/s (see benchmarks/README.md).
"""
from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import (
    Any,
    AsyncContextManager,
    AsyncIterator,
    Callable,
    Collection,
    Mapping,
    Optional,
)

import aiohttp

from ..errors import OsireError, UpstreamError, UpstreamTimeout
from .endpoints import Endpoint
from .headers import request_headers, response_headers, with_key
from .router import Router
from .tls import tls_for

log = logging.getLogger("jupyter_osire_llm.proxy.upstream")

# Failures before the engine answered anything (nothing reached the client yet), so another
# attempt is invisible to the caller. A refused or timed-out connection, or an engine that cannot
# present its pinned certificate, also takes the engine out of rotation; a dropped or reset
# keep-alive connection does not (the next attempt may use the same engine). A request cut this
# way may already have reached the engine, which then works on it twice: accepted, rather than
# failing a caller over a stale pooled connection.
MARKS_FAILED = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                aiohttp.ServerFingerprintMismatch, aiohttp.ClientSSLError)
RETRYABLE = (*MARKS_FAILED, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

Picker = Callable[[Collection[str]], Endpoint]


@dataclass(frozen=True)
class ProxyConfig:
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0        # per read from the engine (sock_read), not a total limit
    retries: int = 2                   # other replicas tried after a connection failure
    max_body_size: int = 32 * 1024 * 1024
    retry_backoff: float = 0.05        # seconds, doubled per retry
    probe_interval: float = 2.0        # seconds between health probes of failed engines
    probe_timeout: float = 2.0


class UpstreamResponse:
    """An engine's answer: status and headers now, the body as it arrives."""

    __slots__ = ("status", "headers", "content_type", "streaming", "event_stream", "endpoint",
                 "_response")

    def __init__(self, response: aiohttp.ClientResponse, endpoint: Endpoint) -> None:
        self._response = response
        self.endpoint = endpoint
        self.status = response.status
        self.headers = response_headers(response.headers)
        self.content_type = response.headers.get("Content-Type", "")
        self.event_stream = self.content_type.startswith("text/event-stream")
        self.streaming = self.event_stream or "Content-Length" not in response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate(exc, self.endpoint) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """Byte chunks as the engine sends them; errors become UpstreamError/UpstreamTimeout."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate(exc, self.endpoint) from exc


class UpstreamProxy:
    """Sends requests to engines chosen by the router, over one pooled keep-alive session."""

    def __init__(self, router: Router, config: ProxyConfig = ProxyConfig()) -> None:
        self.router = router
        self.config = config
        self._session: Optional[aiohttp.ClientSession] = None
        self._probe_task: Optional[asyncio.Task[None]] = None

    async def start(self) -> None:
        self._ensure_session()
        if self._probe_task is None:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="osire-probe")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
            self._probe_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def for_model(self, model: str, payload: Optional[dict[str, Any]], body: bytes,
                  method: str, path: str, headers: Mapping[str, str]
                  ) -> AsyncContextManager[UpstreamResponse]:
        """Forward to a ready replica of ``model``; ``path`` starts with ``/v1/``."""
        def body_for(endpoint: Endpoint) -> bytes:
            rename = self.router.upstream_model(endpoint)
            if rename is None or payload is None:
                return body
            return json.dumps({**payload, "model": rename}).encode()

        return self.open(lambda tried: self.router.resolve(model, tried), body_for,
                         method, path, headers, inference=True)

    def for_deployment(self, deployment_id: str, body: bytes, method: str, path: str,
                       headers: Mapping[str, str]) -> AsyncContextManager[UpstreamResponse]:
        """Forward any engine route of one deployment (metrics, tokenize, docs...)."""
        return self.open(lambda tried: self.router.for_deployment(deployment_id, tried),
                         lambda endpoint: body, method, path, headers)

    @asynccontextmanager
    async def open(self, pick: Picker, body_for: Callable[[Endpoint], bytes], method: str,
                   path: str, headers: Mapping[str, str], inference: bool = False
                   ) -> AsyncIterator[UpstreamResponse]:
        """Send one request; retry elsewhere only on connection failure (nothing sent yet).
        ``inference``: the request counts as use of the deployment (idle shutdown) until its
        body has been relayed to the last byte."""
        forwarded = request_headers(headers)
        response, endpoint = await self._send(pick, body_for, method, path, forwarded, inference)
        try:
            yield UpstreamResponse(response, endpoint)
        except BaseException:
            response.close()             # abort: the engine sees the disconnect and stops
            raise
        else:
            response.release()
        finally:
            self._release(endpoint, inference)

    def _acquire(self, endpoint: Endpoint, inference: bool) -> None:
        self.router.acquire(endpoint)
        if inference:
            self.router.begin_use(endpoint)

    def _release(self, endpoint: Endpoint, inference: bool) -> None:
        self.router.release(endpoint)
        if inference:
            self.router.end_use(endpoint)

    async def _send(self, pick: Picker, body_for: Callable[[Endpoint], bytes], method: str,
                    path: str, headers: dict[str, str], inference: bool = False
                    ) -> tuple[aiohttp.ClientResponse, Endpoint]:
        session = self._ensure_session()
        tried: list[str] = []
        failure = UpstreamError("no engine could be reached")
        for attempt in range(self.config.retries + 1):
            endpoint = pick(tried) if attempt == 0 else self._next(pick, tried, failure)
            if attempt:
                await asyncio.sleep(self.config.retry_backoff * 2 ** (attempt - 1))
            self._acquire(endpoint, inference)
            try:
                response = await session.request(method, endpoint.url + path,
                                                 headers=with_key(headers, endpoint.key),
                                                 data=body_for(endpoint) or None,
                                                 ssl=tls_for(endpoint))
                return response, endpoint
            except RETRYABLE as exc:
                self._release(endpoint, inference)
                if isinstance(exc, MARKS_FAILED):
                    self.router.mark_failed(endpoint)
                    tried.append(endpoint.url)
                failure = translate(exc, endpoint)
                log.warning("%s (attempt %d of %d)", failure.message, attempt + 1,
                            self.config.retries + 1)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self._release(endpoint, inference)
                raise translate(exc, endpoint) from exc
            except BaseException:
                self._release(endpoint, inference)
                raise
        raise failure

    @staticmethod
    def _next(pick: Picker, tried: Collection[str], failure: UpstreamError) -> Endpoint:
        """Another replica, or the last connection failure when none is left."""
        try:
            return pick(tried)
        except OsireError:
            raise failure from None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = make_session(self.config)
        return self._session

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe_interval)
            try:
                await self.probe_failed()
            except Exception:  # the loop must survive anything one cycle throws
                log.exception("health probe cycle failed")

    async def probe_failed(self) -> None:
        """Return engines to rotation whose ``/health`` answers again."""
        self.router.forget_gone()
        failed = self.router.failed()
        results = await asyncio.gather(*(self._healthy(e) for e in failed))
        for endpoint, healthy in zip(failed, results):
            if healthy:
                log.info("engine %s of %s is healthy again", endpoint.url, endpoint.model)
                self.router.mark_healthy(endpoint)

    async def _healthy(self, endpoint: Endpoint) -> bool:
        timeout = aiohttp.ClientTimeout(total=self.config.probe_timeout)
        try:  # no key: /health needs none, and an engine not yet proven gets nothing
            async with self._ensure_session().get(endpoint.url + "/health", timeout=timeout,
                                                  ssl=tls_for(endpoint)) as resp:
                return resp.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


def make_session(config: ProxyConfig) -> aiohttp.ClientSession:
    """One keep-alive pool for all engines; no connection limit (1000 streams must fit).

    Idle connections are dropped after 4 s, before uvicorn's (vLLM's) 5 s keep-alive timeout
    closes them under us.
    """
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=4.0,
                                     ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=config.connect_timeout,
                                    sock_read=config.idle_timeout)
    # Bytes pass through untouched: no decompression, no default Accept-Encoding/Content-Type.
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 skip_auto_headers=("Accept-Encoding", "Content-Type",
                                                    "User-Agent"))


def translate(exc: BaseException, endpoint: Endpoint) -> UpstreamError:
    """aiohttp's errors as the project's: timeouts 504, everything else 502."""
    where = f"engine of {endpoint.model!r} at {endpoint.url}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"timed out connecting to the {where}")
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(f"the {where} sent nothing within the idle timeout")
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return UpstreamError(f"the {where} did not present its job's certificate (an impostor on "
                             "its port?): nothing was sent", code="engine_not_trusted")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"cannot connect to the {where}: {exc.os_error or exc}")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return UpstreamError(f"the {where} closed the connection before the answer was complete",
                             code="upstream_disconnected")
    return UpstreamError(f"the {where} failed: {exc}")

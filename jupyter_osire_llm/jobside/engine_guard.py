"""Key guard for the engine: an ASGI middleware that closes every route but ``/health``.

vLLM's own ``--api-key`` (or ``VLLM_API_KEY``) guards only the ``/v1/...`` routes; ``/metrics``,
``/tokenize``, ``/openapi.json``, ``/docs``, ``/version``, ``/ping`` and admin routes answer anyone
who can reach the compute node. This middleware demands ``Authorization: Bearer <key>`` on all of
them. vLLM loads it with::

    PYTHONPATH=<dir holding a copy of this file> \\
    VLLM_API_KEY=<key, read by the job script from a 0600 file; never in argv> \\
    python -m vllm.entrypoints.openai.api_server ... --middleware engine_guard.KeyGuard

vLLM imports the dotted path given to ``--middleware``; a class is added with
``app.add_middleware(cls)`` (so it is constructed as ``cls(app)``), a coroutine function as an
``@app.middleware("http")`` function.

This file runs inside the ENGINE's environment, which is not the Jupyter one: it must stay a single
file using the standard library only, and import nothing from ``jupyter_osire_llm``.

Behaviour:
- ``http``: the paths in ``open_paths`` (``/health`` by default) pass without a key; everything
  else needs the key, compared in constant time, or gets 401 with an OpenAI-shaped JSON error.
- No key configured (``VLLM_API_KEY`` unset or empty): fail closed, every route but the open ones
  is refused.
- ``websocket``: same rule; a refused handshake gets a 401 HTTP response where the server supports
  the ``websocket.http.response`` extension, otherwise a close with code 1008 (policy violation).
- ``lifespan`` and any other scope type pass straight through.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys

__all__ = ["KeyGuard", "KEY_ENV", "DEFAULT_OPEN_PATHS"]

KEY_ENV = "VLLM_API_KEY"
DEFAULT_OPEN_PATHS = frozenset({"/health"})


def _digest(value: bytes) -> bytes:
    # Hash both sides first: compare_digest on equal-length digests leaks neither content nor length.
    return hashlib.sha256(value).digest()


def _error_body(message: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    ).encode()


class KeyGuard:
    """Pure ASGI middleware: refuse every route but the open ones without the bearer key."""

    def __init__(self, app, key: str | None = None, open_paths=None, env=None) -> None:
        self.app = app
        if key is None:
            key = (os.environ if env is None else env).get(KEY_ENV, "")
        key = key.strip()
        self._key_digest = _digest(key.encode()) if key else None
        self.open_paths = frozenset(open_paths) if open_paths is not None else DEFAULT_OPEN_PATHS
        if self._key_digest is None:
            print(
                f"engine_guard: no {KEY_ENV} set; refusing every route except "
                f"{', '.join(sorted(self.open_paths))}",
                file=sys.stderr,
                flush=True,
            )

    # -- decisions ---------------------------------------------------------------------------
    def _is_open(self, scope) -> bool:
        path = scope.get("path", "")
        if path in self.open_paths:
            return True
        root = scope.get("root_path", "")
        # Servers disagree on whether path includes root_path; accept both spellings.
        return bool(root) and path.startswith(root) and path[len(root):] in self.open_paths

    def _authorized(self, scope) -> bool:
        if self._key_digest is None:
            return False
        value = None
        for name, raw in scope.get("headers", ()):
            if name.lower() == b"authorization":
                value = raw
                break  # the first one counts, as for Starlette's headers.get
        if value is None:
            return False
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(_digest(token.strip()), self._key_digest)

    def _message(self) -> str:
        if self._key_digest is None:
            return "This engine has no API key configured; only /health is served."
        return "Invalid or missing API key: send 'Authorization: Bearer <key>'."

    # -- ASGI --------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._is_open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = _error_body(self._message())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        if kind == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # websocket: wait for the connect event, then deny the handshake.
        message = await receive()
        if message.get("type") != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

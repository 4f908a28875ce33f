"""A small, fast OpenAI-compatible server that stands in for vLLM in tests and benchmarks.

Run it the way the job script runs vLLM (unknown vLLM-style arguments are ignored)::

    VLLM_API_KEY=secret python tests/fake_engine.py --host 127.0.0.1 --port 8000 \\
        --served-model-name tiny [--model /path ...]

Like the real engine behind ``engine_guard.KeyGuard``, every route except ``/health`` needs
``Authorization: Bearer $VLLM_API_KEY`` (401 in the OpenAI error shape otherwise); with no key set
everything but ``/health`` is refused, unless ``OSIRE_FAKE_NO_AUTH=1``.

Routes
    GET  /health                 200 once started (503 while starting or "unhealthy")
    GET  /ping, /version         as vLLM
    GET  /v1/models              the served model name(s)
    POST /v1/chat/completions    stream and non-stream; vLLM's response and chunk shapes
    POST /v1/completions         stream and non-stream
    POST /v1/embeddings          deterministic 8-dim vectors
    POST /tokenize               {"prompt"} or {"messages"}: one token per whitespace word
    GET  /metrics                Prometheus text: vllm:num_requests_running / _waiting, counters
    GET  /fake/stats             JSON counters for tests: requests, in_flight, streams_started,
                                 streams_completed, streams_cancelled (client went away)

Generation: ``max_tokens`` (or ``max_completion_tokens``) tokens, default 16, token ``i`` being
``"t<i> "``; ``finish_reason`` is ``"length"``. ``stream_options.include_usage`` adds the usage
chunk. Streams are ``data: {json}\\n\\n`` events ending with ``data: [DONE]\\n\\n``.

Controls (environment variable, or the command-line option in brackets):
    OSIRE_FAKE_STARTUP_DELAY=S     [--startup-delay]  seconds after start before /health says 200
                                   (the port is open at once; until then every route answers 503)
    OSIRE_FAKE_EXIT_AT_START=CODE  [--exit-at-start]  print an error line to stderr and exit CODE
                                   (after the startup delay, if any) instead of serving
    OSIRE_FAKE_TOKEN_DELAY=S       [--token-delay]    seconds between stream chunks (and per token
                                   before a non-stream answer); default 0
    OSIRE_FAKE_DIE_AFTER_CHUNKS=N  [--die-after-chunks] os._exit(1) after sending N content chunks
                                   of a stream (the engine dies mid-stream)
    OSIRE_FAKE_HEADERS_LOG=PATH    [--headers-log]    append one JSON line per request:
                                   {"method", "path", "headers": {lower-case name: value}}
    OSIRE_FAKE_UNHEALTHY_FILE=PATH [--unhealthy-file] while PATH exists, /health answers 503
    OSIRE_FAKE_NO_AUTH=1           [--no-auth]        serve without any key check
    OSIRE_FAKE_REPLY=TEXT          [--reply]          answer TEXT instead of the ``t<i> `` tokens
                                   (one stream chunk per word, whitespace kept)
    OSIRE_FAKE_RESPONSE_HEADERS=JSON [--response-headers] extra headers on every answer, streams
                                   included: a JSON list of [name, value] pairs (or an object)
    OSIRE_FAKE_LOG_LINE=TEXT       [--log-line]       one more line printed to stderr at start
    OSIRE_FAKE_DEFAULT_TOKENS=N    default number of tokens when the request gives none (16)
    OSIRE_FAKE_FAIL_FIRST=N        [--fail-first]     the first N generation requests (chat,
                                   completions, embeddings) fail in turn with 503, 429 (with
                                   Retry-After: 1), 500 and a cut connection, then all succeed
    OSIRE_FAKE_FAIL_FILE=PATH      [--fail-file]      while PATH exists, generation requests 503
    OSIRE_FAKE_HOLD_FILE=PATH      [--hold-file]      while PATH exists, generation requests after
    OSIRE_FAKE_HOLD_AFTER=N        [--hold-after]     the first N wait for it to go (a test holds
                                   a batch part-way instead of hoping to catch it there)
    --ssl-certfile F --ssl-keyfile K   serve HTTPS with that certificate (as vLLM/uvicorn)
    --uds PATH                     serve HTTP on this Unix socket instead of host and port (as
                                   vLLM's --uds)

No access log is written; on start it prints vLLM-like lines to stderr. SIGTERM/SIGINT end it with
exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
import uuid

from aiohttp import web

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_FINGERPRINT = "vllm-0.0.0-fake"
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    # llama.cpp's llama-server spellings too (-m, --alias, --api-key-file, --ssl-cert-file ...)
    p.add_argument("--model", "-m", default="fake-model")
    p.add_argument("--served-model-name", "--alias", nargs="+", default=None)
    p.add_argument("--api-key-file", default=None)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--startup-delay", type=float, default=float(_env("OSIRE_FAKE_STARTUP_DELAY", 0)))
    p.add_argument("--exit-at-start", type=int, default=None if _env("OSIRE_FAKE_EXIT_AT_START") is None
                   else int(_env("OSIRE_FAKE_EXIT_AT_START")))
    p.add_argument("--token-delay", type=float, default=float(_env("OSIRE_FAKE_TOKEN_DELAY", 0)))
    p.add_argument("--die-after-chunks", type=int, default=None if _env("OSIRE_FAKE_DIE_AFTER_CHUNKS") is None
                   else int(_env("OSIRE_FAKE_DIE_AFTER_CHUNKS")))
    p.add_argument("--headers-log", default=_env("OSIRE_FAKE_HEADERS_LOG"))
    p.add_argument("--unhealthy-file", default=_env("OSIRE_FAKE_UNHEALTHY_FILE"))
    p.add_argument("--no-auth", action="store_true", default=_env("OSIRE_FAKE_NO_AUTH", "0") not in ("0", "false"))
    p.add_argument("--reply", default=_env("OSIRE_FAKE_REPLY"))
    p.add_argument("--response-headers", default=_env("OSIRE_FAKE_RESPONSE_HEADERS"))
    p.add_argument("--log-line", default=_env("OSIRE_FAKE_LOG_LINE"))
    p.add_argument("--default-tokens", type=int, default=int(_env("OSIRE_FAKE_DEFAULT_TOKENS", 16)))
    p.add_argument("--fail-first", type=int, default=int(_env("OSIRE_FAKE_FAIL_FIRST", 0)))
    p.add_argument("--fail-file", default=_env("OSIRE_FAKE_FAIL_FILE"))
    p.add_argument("--hold-file", default=_env("OSIRE_FAKE_HOLD_FILE"))
    p.add_argument("--hold-after", type=int, default=int(_env("OSIRE_FAKE_HOLD_AFTER", 0)))
    p.add_argument("--uds", default=None)
    # A headless rank of a multi-node engine (vLLM's --headless): no API, runs until stopped.
    p.add_argument("--headless", action="store_true")
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--ssl-certfile", "--ssl-cert-file", default=None)
    p.add_argument("--ssl-keyfile", "--ssl-key-file", default=None)
    args, _unknown = p.parse_known_args(argv)  # vLLM-style engine arguments are accepted and ignored
    if not args.served_model_name:
        args.served_model_name = [args.model]
    return args


class FakeEngine:
    def __init__(self, args):
        self.args = args
        self.names = list(args.served_model_name)
        self.started = time.monotonic()
        self.ready_at = self.started + max(args.startup_delay, 0.0)
        key = (open(args.api_key_file).read() if args.api_key_file
               else _env("VLLM_API_KEY", "")).strip()
        self.expected = ("Bearer " + key).encode() if key else None
        self.stats = {"requests": 0, "in_flight": 0, "streams_started": 0,
                      "streams_completed": 0, "streams_cancelled": 0, "failed_on_purpose": 0}
        self.created = int(time.time())
        self._headers_log = open(args.headers_log, "a", buffering=1) if args.headers_log else None

    # -- middleware: readiness, auth, header log -------------------------------------------------
    @web.middleware
    async def gate(self, request, handler):
        self.stats["requests"] += 1
        if self._headers_log is not None:
            self._headers_log.write(json.dumps({
                "method": request.method, "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items()}}) + "\n")
        if request.path != "/health":
            if time.monotonic() < self.ready_at:
                return _error(503, "Engine is starting", "ServiceUnavailableError")
            if not self.args.no_auth and not self._authorized(request):
                return web.Response(status=401, content_type=_JSON, headers={"WWW-Authenticate": "Bearer"},
                                    body=_dumps({"error": {"message": "Invalid or missing API key",
                                                           "type": "invalid_request_error", "param": None,
                                                           "code": "invalid_api_key"}}))
        failure = self._failure(request)
        if failure is not None:
            return failure
        await self._hold(request)
        self.stats["in_flight"] += 1
        try:
            return await handler(request)
        finally:
            self.stats["in_flight"] -= 1

    def _failure(self, request):
        """A failure asked for by --fail-first or --fail-file, or None."""
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return None
        failing_file = self.args.fail_file and os.path.exists(self.args.fail_file)
        number = self.stats["failed_on_purpose"]
        if not failing_file and number >= self.args.fail_first:
            return None
        self.stats["failed_on_purpose"] += 1
        kind = 0 if failing_file else number % 4
        if kind == 3:   # the connection is cut without an answer
            request.transport.close()
            return web.Response(status=503)   # never sent: the connection is gone
        status = (503, 429, 500)[kind]
        response = _error(status, f"failing on purpose ({status})", "ServiceUnavailableError")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    async def _hold(self, request) -> None:
        """--hold-file: generation requests after the first --hold-after wait while it exists."""
        if not self.args.hold_file or request.method != "POST" or \
                not request.path.startswith("/v1/"):
            return
        self.stats["held_count"] = number = self.stats.get("held_count", 0) + 1
        while number > self.args.hold_after and os.path.exists(self.args.hold_file):
            await asyncio.sleep(0.05)

    def _authorized(self, request):
        if self.expected is None:
            return False
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, self.expected)

    # -- routes ----------------------------------------------------------------------------------
    async def health(self, request):
        if time.monotonic() < self.ready_at:
            return web.Response(status=503)
        if self.args.unhealthy_file and os.path.exists(self.args.unhealthy_file):
            return web.Response(status=503)
        return web.Response(status=200)

    async def ping(self, request):
        return web.Response(status=200)

    async def version(self, request):
        return web.Response(body=b'{"version":"0.0.0+fake"}', content_type=_JSON)

    async def models(self, request):
        data = [{"id": n, "object": "model", "created": self.created, "owned_by": "vllm",
                 "root": self.args.model, "parent": None, "max_model_len": self.args.max_model_len,
                 "permission": []} for n in self.names]
        return web.Response(body=_dumps({"object": "list", "data": data}), content_type=_JSON)

    async def stats_route(self, request):
        return web.Response(body=_dumps(self.stats), content_type=_JSON)

    async def metrics(self, request):
        name = self.names[0]
        s = self.stats
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{name}"}} {float(max(s["in_flight"] - 1, 0))}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="{name}"}} 0.0\n'
            "# TYPE fake:requests_total counter\n"
            f"fake:requests_total {float(s['requests'])}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def _body(self, request):
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return None, _error(400, "Request body is not valid JSON", "BadRequestError")
        if not isinstance(body, dict):
            return None, _error(400, "Request body must be a JSON object", "BadRequestError")
        model = body.get("model")
        if model is not None and model not in self.names:
            return None, _error(404, f"The model `{model}` does not exist. Valid aliases: {', '.join(self.names)}.",
                                "NotFoundError", param="model")
        return body, None

    def _n_tokens(self, body, *keys):
        for k in keys:
            v = body.get(k)
            if isinstance(v, int) and v >= 0:
                return v
        return self.args.default_tokens

    async def tokenize(self, request):
        body, err = await self._body(request)
        if err:
            return err
        if "messages" in body:
            text = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
        else:
            text = str(body.get("prompt", ""))
        tokens = [abs(hash(w)) % 1000 for w in text.split()]
        return web.Response(body=_dumps({"count": len(tokens), "max_model_len": self.args.max_model_len,
                                         "tokens": tokens, "token_strs": None}), content_type=_JSON)

    async def embeddings(self, request):
        body, err = await self._body(request)
        if err:
            return err
        inputs = body.get("input", "")
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        data, total = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            total += max(len(text.split()), 1)
            seed = sum(text.encode()) or 1
            vec = [((seed * (j + 7)) % 97) / 97.0 - 0.5 for j in range(8)]
            data.append({"index": i, "object": "embedding", "embedding": vec})
        return web.Response(body=_dumps({
            "id": "embd-" + uuid.uuid4().hex, "object": "list", "created": int(time.time()),
            "model": body.get("model") or self.names[0], "data": data,
            "usage": {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0,
                      "prompt_tokens_details": None}}), content_type=_JSON)

    async def chat(self, request):
        body, err = await self._body(request)
        if err:
            return err
        messages = body.get("messages") or []
        prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in messages if isinstance(m, dict))
        return await self._generate(request, body, chat=True, prompt_tokens=prompt_tokens,
                                    n=self._n_tokens(body, "max_completion_tokens", "max_tokens"))

    async def completions(self, request):
        body, err = await self._body(request)
        if err:
            return err
        prompt = body.get("prompt", "")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        return await self._generate(request, body, chat=False, prompt_tokens=prompt_tokens,
                                    n=self._n_tokens(body, "max_tokens"))

    async def _generate(self, request, body, *, chat, prompt_tokens, n):
        reply = _words(self.args.reply) if self.args.reply is not None else None
        if reply is not None:
            n = len(reply)
        model = body.get("model") or self.names[0]
        created = int(time.time())
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n, "completion_tokens": n,
                 "prompt_tokens_details": None, "completion_tokens_details": None}
        delay = self.args.token_delay
        if not body.get("stream"):
            if delay:
                await asyncio.sleep(delay * n)
            text = "".join(reply) if reply is not None else "".join(f"t{i} " for i in range(n))
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                  "annotations": None, "audio": None, "function_call": None,
                                                  "reasoning": None},
                          "logprobs": None, "finish_reason": "length", "stop_reason": None,
                          "token_ids": None, "routed_experts": None}
                out = {"id": rid, "object": "chat.completion", "created": created, "model": model,
                       "choices": [choice], "service_tier": None, "system_fingerprint": _FINGERPRINT,
                       "usage": usage, "prompt_logprobs": None, "prompt_token_ids": None,
                       "prompt_text": None, "kv_transfer_params": None, "ec_transfer_params": None,
                       "metrics": None}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                          "stop_reason": None, "token_ids": None, "prompt_logprobs": None,
                          "prompt_token_ids": None, "routed_experts": None}
                out = {"id": rid, "object": "text_completion", "created": created, "model": model,
                       "choices": [choice], "service_tier": None, "system_fingerprint": _FINGERPRINT,
                       "usage": usage, "kv_transfer_params": None, "ec_transfer_params": None,
                       "metrics": None}
            return web.Response(body=_dumps(out), content_type=_JSON)

        # Chunks as vLLM 0.32 sends them (captured from the real engine): chat opens with a role
        # chunk, every token is one chunk, the last token's chunk carries finish_reason, then the
        # optional usage chunk and [DONE]. Fixed parts are rendered once per request.
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = ('data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[{"index":0,'
                % (rid, obj, created, _dumps(model))).encode()
        if chat:
            mid = b'"delta":{"content":'
            tail = b'},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'
            last = b'},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}]}\n\n'
        else:
            mid = b'"text":'
            tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}\n\n'
            last = (b',"logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,'
                    b'"token_ids":null}],"system_fingerprint":"' + _FINGERPRINT.encode() + b'"}\n\n')
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        self.stats["streams_started"] += 1
        die_after = self.args.die_after_chunks
        try:
            if chat:
                await resp.write(head + b'"delta":{"role":"assistant","content":""},"logprobs":null,'
                                        b'"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}\n\n')
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                token = _dumps(reply[i]).encode() if reply is not None else b'"t%d "' % i
                await resp.write(head + mid + token + (last if i == n - 1 else tail))
                if die_after is not None and i + 1 >= die_after:
                    os._exit(1)
            final = b""
            if n == 0:
                final = head + mid + b'""' + last
            if include_usage:
                u = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + n, "completion_tokens": n}
                final += ('data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[],"usage":%s,'
                          '"system_fingerprint":"%s"}\n\n'
                          % (rid, obj, created, _dumps(model), _dumps(u), _FINGERPRINT)).encode()
            await resp.write(final + _DONE)
            await resp.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.stats["streams_cancelled"] += 1
            raise
        self.stats["streams_completed"] += 1
        return resp

    async def add_headers(self, request, response):
        for name, value in self.extra_headers:
            response.headers.add(name, value)

    def app(self):
        app = web.Application(middlewares=[self.gate], client_max_size=64 * 1024 * 1024)
        self.extra_headers = _header_pairs(self.args.response_headers)
        if self.extra_headers:
            app.on_response_prepare.append(self.add_headers)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/ping", self.ping)
        r.add_post("/ping", self.ping)
        r.add_get("/version", self.version)
        r.add_get("/v1/models", self.models)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/embeddings", self.embeddings)
        r.add_post("/tokenize", self.tokenize)
        r.add_get("/metrics", self.metrics)
        r.add_get("/fake/stats", self.stats_route)
        return app


def _error(status, message, kind, param=None):
    return web.Response(status=status, content_type=_JSON, body=_dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": status}}))


def _words(text):
    """``text`` as stream chunks: each word with the whitespace after it."""
    return re.findall(r"\s*\S+\s*|\s+", text) or [""]


def _header_pairs(spec):
    if not spec:
        return []
    given = json.loads(spec)
    return list(given.items()) if isinstance(given, dict) else [tuple(p) for p in given]


def _log(msg):
    print(f"INFO {time.strftime('%m-%d %H:%M:%S')} [fake_engine] {msg}", file=sys.stderr, flush=True)


async def serve(args):
    engine = FakeEngine(args)
    runner = web.AppRunner(engine.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    tls = None
    if args.ssl_certfile:  # as uvicorn (vLLM) does with --ssl-certfile/--ssl-keyfile
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    if args.uds:   # as vLLM's --uds: host, port (and TLS) are ignored
        site = web.UnixSite(runner, args.uds, backlog=4096)
        where = f"unix:{args.uds}"
    else:
        site = web.TCPSite(runner, args.host, args.port, backlog=4096, reuse_address=True,
                           ssl_context=tls)
        where = f"{'https' if tls else 'http'}://{args.host}:{args.port}"
    await site.start()
    _log(f"Starting vLLM-compatible fake API server on {where} "
         f"serving {', '.join(engine.names)} (pid {os.getpid()})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_at_start is not None:
        await asyncio.sleep(max(args.startup_delay, 0.0))
        print(f"ERROR {time.strftime('%m-%d %H:%M:%S')} [fake_engine] RuntimeError: engine failed to start "
              f"(OSIRE_FAKE_EXIT_AT_START={args.exit_at_start})", file=sys.stderr, flush=True)
        await runner.cleanup()
        return args.exit_at_start
    if args.startup_delay > 0:
        async def announce():
            await asyncio.sleep(args.startup_delay)
            _log("Application startup complete.")
        loop.create_task(announce())
    else:
        _log("Application startup complete.")
    if args.log_line:
        print(args.log_line, file=sys.stderr, flush=True)
    await stop.wait()
    _log("Shutting down")
    await runner.cleanup()
    return 0


def headless(args) -> int:
    """A rank of a multi-node engine without an API: says where it runs, waits until stopped."""
    _log(f"headless rank {args.node_rank} on {socket.gethostname()} (pid {os.getpid()})")
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    while not stopped:
        time.sleep(0.2)
    _log(f"headless rank {args.node_rank} shutting down")
    return 0


def main(argv=None):
    args = parse_args(argv)
    return headless(args) if args.headless else asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())

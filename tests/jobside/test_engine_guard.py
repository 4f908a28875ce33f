"""KeyGuard: unit tests on a tiny ASGI app, and one test with the real vLLM CPU engine."""

from __future__ import annotations

import ast
import json
import os
import sys
import time
import urllib.error
import urllib.request

import pytest

from engine_tools import (
    ENGINE_GUARD,
    engine_guard_dir,
    free_port,
    group_rss_mb,
    make_tiny_model,
    start_process,
    stop_process_group,
    vllm_command,
    vllm_env,
    vllm_python,
    vllm_skip_reason,
    wait_healthy,
)
from jupyter_osire_llm.jobside.engine_guard import KeyGuard

KEY = "k3y-" + "x" * 40


# --- a tiny ASGI harness ------------------------------------------------------------------------

class App:
    """Records the scopes it sees and answers 200 "ok" (http) or accepts (websocket)."""

    def __init__(self):
        self.scopes = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
        elif scope["type"] == "lifespan":
            msg = await receive()
            assert msg["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})


async def call(guard, path="/v1/models", auth=None, kind="http", headers=(), extensions=None, root_path=""):
    hdrs = [(b"host", b"x")] + list(headers)
    if auth is not None:
        hdrs.append((b"authorization", auth.encode()))
    scope = {"type": kind, "path": path, "raw_path": path.encode(), "root_path": root_path,
             "headers": hdrs, "method": "GET", "query_string": b""}
    if extensions is not None:
        scope["extensions"] = extensions
    sent = []
    incoming = [{"type": "websocket.connect"} if kind == "websocket" else
                {"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await guard(scope, receive, send)
    return sent


def status_of(sent):
    start = [m for m in sent if m["type"].endswith("response.start")]
    return start[0]["status"] if start else None


def body_of(sent):
    return b"".join(m.get("body", b"") for m in sent if m["type"].endswith("response.body"))


# --- unit tests -----------------------------------------------------------------------------------

async def test_health_needs_no_key():
    app = App()
    sent = await call(KeyGuard(app, key=KEY), "/health")
    assert status_of(sent) == 200 and len(app.scopes) == 1


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/tokenize", "/openapi.json", "/docs",
                                  "/version", "/ping", "/pause", "/health/x", "/healthz", "/", "//health"])
async def test_every_other_path_needs_the_key(path):
    app = App()
    guard = KeyGuard(app, key=KEY)
    sent = await call(guard, path)
    assert status_of(sent) == 401 and app.scopes == []
    err = json.loads(body_of(sent))["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error" and err["message"]
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"www-authenticate"] == b"Bearer"
    assert int(headers[b"content-length"]) == len(body_of(sent))
    assert status_of(await call(guard, path, auth=f"Bearer {KEY}")) == 200
    assert len(app.scopes) == 1


@pytest.mark.parametrize("auth", [
    "", "Bearer", "Bearer ", f"Basic {KEY}", f"{KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}",
    "Bearer wrong", f"Token {KEY}",
])
async def test_wrong_credentials_are_refused(auth):
    app = App()
    assert status_of(await call(KeyGuard(app, key=KEY), auth=auth)) == 401
    assert app.scopes == []


@pytest.mark.parametrize("auth", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER {KEY}", f"Bearer {KEY} "])
async def test_right_key_passes(auth):
    app = App()
    assert status_of(await call(KeyGuard(app, key=KEY), auth=auth)) == 200


async def test_first_authorization_header_counts():
    app = App()
    guard = KeyGuard(app, key=KEY)
    wrong_first = [(b"authorization", b"Bearer nope"), (b"Authorization", f"Bearer {KEY}".encode())]
    assert status_of(await call(guard, headers=wrong_first)) == 401
    right_first = [(b"Authorization", f"Bearer {KEY}".encode()), (b"authorization", b"Bearer nope")]
    assert status_of(await call(guard, headers=right_first)) == 200


async def test_key_from_env_and_stripped(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", f"  {KEY}\n")
    app = App()
    guard = KeyGuard(app)
    assert status_of(await call(guard, auth=f"Bearer {KEY}")) == 200
    assert status_of(await call(guard, auth="Bearer other")) == 401


@pytest.mark.parametrize("value", [None, "", "   "])
async def test_no_key_fails_closed(monkeypatch, capsys, value):
    if value is None:
        monkeypatch.delenv("VLLM_API_KEY", raising=False)
    else:
        monkeypatch.setenv("VLLM_API_KEY", value)
    app = App()
    guard = KeyGuard(app)
    assert "no VLLM_API_KEY" in capsys.readouterr().err
    for auth in (None, "Bearer", "Bearer ", "Bearer  ", f"Bearer {KEY}"):
        sent = await call(guard, "/v1/models", auth=auth)
        assert status_of(sent) == 401
        assert "no API key configured" in json.loads(body_of(sent))["error"]["message"]
    assert app.scopes == []
    assert status_of(await call(guard, "/health")) == 200


async def test_lifespan_passes_through():
    app = App()
    guard = KeyGuard(app, key=KEY)
    sent = []
    msgs = [{"type": "lifespan.startup"}]

    async def receive():
        return msgs.pop(0)

    async def send(m):
        sent.append(m)

    await guard({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [s["type"] for s in app.scopes] == ["lifespan"]
    assert sent == [{"type": "lifespan.startup.complete"}]


async def test_websocket_refused_with_close_1008():
    app = App()
    sent = await call(KeyGuard(app, key=KEY), "/v1/realtime", kind="websocket")
    assert sent == [{"type": "websocket.close", "code": 1008}] and app.scopes == []


async def test_websocket_refused_with_401_where_supported():
    app = App()
    sent = await call(KeyGuard(app, key=KEY), "/v1/realtime", kind="websocket",
                      extensions={"websocket.http.response": {}})
    assert status_of(sent) == 401 and json.loads(body_of(sent))["error"]["code"] == "invalid_api_key"
    assert app.scopes == []


async def test_websocket_with_key_passes():
    app = App()
    sent = await call(KeyGuard(app, key=KEY), "/v1/realtime", kind="websocket", auth=f"Bearer {KEY}")
    assert sent == [{"type": "websocket.accept"}] and len(app.scopes) == 1


async def test_root_path():
    app = App()
    guard = KeyGuard(app, key=KEY)
    assert status_of(await call(guard, "/engine/health", root_path="/engine")) == 200
    assert status_of(await call(guard, "/health", root_path="/engine")) == 200
    assert status_of(await call(guard, "/engine/metrics", root_path="/engine")) == 401


async def test_open_paths_configurable():
    app = App()
    guard = KeyGuard(app, key=KEY, open_paths={"/health", "/ping"})
    assert status_of(await call(guard, "/ping")) == 200
    assert status_of(await call(guard, "/metrics")) == 401


def test_guard_is_a_standalone_stdlib_file():
    """It is copied alone into the engine's venv: only stdlib imports, nothing from the package."""
    tree = ast.parse(ENGINE_GUARD.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.add(node.module.split(".")[0])
    modules.discard("__future__")
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


def test_guard_copy_imports_under_its_own_name(tmp_path):
    """As vLLM does it: `--middleware engine_guard.KeyGuard` with PYTHONPATH=<copy dir>."""
    import subprocess

    d = engine_guard_dir(tmp_path / "guard")
    code = ("import importlib, inspect; m = importlib.import_module('engine_guard'); "
            "assert inspect.isclass(m.KeyGuard); print(m.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(d)!r}); {code}"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(d / "engine_guard.py")


# --- the real engine --------------------------------------------------------------------------------

def _get(url, key=None, data=None, timeout=30):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.mark.vllm
def test_real_vllm_with_key_guard(tmp_path):
    python = vllm_python()
    if python is None:
        pytest.skip(vllm_skip_reason())
    model = make_tiny_model(tmp_path / "model")
    guard = engine_guard_dir(tmp_path / "guard")
    port = free_port()
    env = vllm_env(tmp_path / "scratch", KEY, guard)
    log = tmp_path / "engine.log"
    proc = start_process(vllm_command(model, port, "tiny", python=python), env=env, log_path=log)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            waited = wait_healthy(f"{base}/health", timeout=180, proc=proc)
        except Exception:
            print(log.read_text()[-5000:])
            raise
        print(f"\nvLLM healthy after {waited:.1f} s; RSS of its process group {group_rss_mb(proc.pid):.0f} MB")
        assert KEY not in " ".join(proc.args)  # the key travels in the environment, never argv

        assert _get(f"{base}/health")[0] == 200
        for path, body in [("/v1/models", None), ("/metrics", None), ("/openapi.json", None),
                           ("/docs", None), ("/version", None), ("/ping", None),
                           ("/tokenize", {"model": "tiny", "prompt": "hello world"})]:
            status, content, _ = _get(base + path, data=body)
            assert status == 401, (path, status, content[:200])
            assert json.loads(content)["error"]["code"] == "invalid_api_key"
            assert _get(base + path, key="wrong", data=body)[0] == 401, path
            status, content, _ = _get(base + path, key=KEY, data=body)
            assert status == 200, (path, status, content[:200])

        status, content, _ = _get(f"{base}/v1/models", key=KEY)
        assert [m["id"] for m in json.loads(content)["data"]] == ["tiny"]

        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16,
                "ignore_eos": True, "temperature": 0}
        t0 = time.perf_counter()
        status, content, _ = _get(f"{base}/v1/chat/completions", key=KEY, data=chat)
        latency = time.perf_counter() - t0
        assert status == 200, content
        reply = json.loads(content)
        assert reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] == 16
        assert reply["choices"][0]["message"]["role"] == "assistant"
        print(f"16-token chat completion: {latency * 1000:.0f} ms")

        status, content, headers = _get(f"{base}/v1/chat/completions", key=KEY, data={**chat, "stream": True})
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        events = [e for e in content.decode().split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

        assert KEY not in log.read_text()  # never logged
    finally:
        pgid = proc.pid
        t0 = time.monotonic()
        stop_process_group(proc)
        print(f"engine group stopped in {time.monotonic() - t0:.1f} s (exit {proc.returncode})")
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)

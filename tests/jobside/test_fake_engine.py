"""Fast tests of the fake engine (tests/fake_engine.py) that stands in for vLLM."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group, wait_healthy

KEY = "fake-key-123"


class Engine:
    def __init__(self, tmp_path, name="fake", key=KEY, extra=(), **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"fake-{self.port}.log"
        e = dict(os.environ)
        e.pop("VLLM_API_KEY", None)
        if key is not None:
            e["VLLM_API_KEY"] = key
        e.update({k: str(v) for k, v in env.items()})
        self.proc = start_process(fake_engine_command(self.port, name, "127.0.0.1", *extra), env=e,
                                  log_path=self.log)
        self.client = httpx.Client(base_url=self.url, timeout=10,
                                   headers={"Authorization": f"Bearer {key}"} if key else {})

    def wait(self):
        return wait_healthy(f"{self.url}/health", timeout=10, proc=self.proc, interval=0.02)

    def stop(self):
        self.client.close()
        return stop_process_group(self.proc, grace=5)


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path, extra=("--model", "/models/x", "--dtype", "float32", "--enforce-eager",
                                  "--max-model-len", "512", "--middleware", "engine_guard.KeyGuard"))
    eng.wait()
    yield eng
    eng.stop()


def sse_events(text: str):
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    return [json.loads(e[6:]) for e in events[:-1]]


def test_key_required_everywhere_but_health(engine):
    with httpx.Client(base_url=engine.url) as anon:
        assert anon.get("/health").status_code == 200
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/version"),
                             ("GET", "/ping"), ("POST", "/v1/chat/completions"), ("POST", "/tokenize"),
                             ("GET", "/fake/stats")]:
            r = anon.request(method, path, json={})
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert anon.request(method, path, json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    models = engine.client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["fake"]


def test_no_key_configured_fails_closed(tmp_path):
    eng = Engine(tmp_path, key=None)
    try:
        eng.wait()
        assert httpx.get(f"{eng.url}/v1/models").status_code == 401
        assert httpx.get(f"{eng.url}/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401
    finally:
        eng.stop()


def test_chat_non_stream(engine):
    r = engine.client.post("/v1/chat/completions", json={
        "model": "fake", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {**body["choices"][0]["message"], "role": "assistant",
                                             "content": "t0 t1 t2 t3 t4 "}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_chat_stream_shape(engine):
    r = engine.client.post("/v1/chat/completions", json={
        "model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_events(r.text)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "fake" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = chunks[1:-1]
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["t0 ", "t1 ", "t2 ", "t3 "]
    assert [c["choices"][0]["finish_reason"] for c in content] == [None, None, None, "length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_completion_stream_and_non_stream(engine):
    r = engine.client.post("/v1/completions", json={"model": "fake", "prompt": "a b", "max_tokens": 3,
                                                    "stream": True})
    chunks = sse_events(r.text)
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "t0 t1 t2 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    body = engine.client.post("/v1/completions", json={"model": "fake", "prompt": "a b", "max_tokens": 2}).json()
    assert body["choices"][0]["text"] == "t0 t1 " and body["usage"]["prompt_tokens"] == 2


def test_openai_sdk_works_against_it(engine):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key=KEY)
    assert [m.id for m in client.models.list()] == ["fake"]
    out = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}], max_tokens=3)
    assert out.choices[0].message.content == "t0 t1 t2 "
    stream = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}],
                                            max_tokens=3, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "t0 t1 t2 "
    emb = client.embeddings.create(model="fake", input=["a", "b c"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{engine.url}/v1", api_key="wrong").models.list()


def test_other_routes(engine):
    tok = engine.client.post("/tokenize", json={"model": "fake", "prompt": "one two three"}).json()
    assert tok["count"] == 3 and tok["max_model_len"] == 512
    metrics = engine.client.get("/metrics").text
    assert 'vllm:num_requests_running{model_name="fake"}' in metrics
    assert engine.client.get("/version").json()["version"]
    stats = engine.client.get("/fake/stats").json()
    assert stats["requests"] >= 3


def test_die_mid_stream(tmp_path):
    eng = Engine(tmp_path, OSIRE_FAKE_DIE_AFTER_CHUNKS=3)
    try:
        eng.wait()
        got = []
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with eng.client.stream("POST", "/v1/chat/completions", json={
                    "model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10,
                    "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        got.append(line)
        assert len(got) == 4  # the role chunk and three tokens, no [DONE]
        assert eng.proc.wait(timeout=5) == 1
    finally:
        eng.stop()


def test_exit_at_start(tmp_path):
    eng = Engine(tmp_path, OSIRE_FAKE_EXIT_AT_START=3)
    assert eng.proc.wait(timeout=10) == 3
    assert "ERROR" in eng.log.read_text() and "engine failed to start" in eng.log.read_text()
    eng.stop()


def test_startup_delay(tmp_path):
    eng = Engine(tmp_path, OSIRE_FAKE_STARTUP_DELAY=0.6)
    try:
        t0 = time.monotonic()
        while True:  # the port opens at once; /health answers 503 until the delay has passed
            try:
                first = httpx.get(f"{eng.url}/health")
                break
            except httpx.ConnectError:
                time.sleep(0.02)
        assert first.status_code == 503
        assert eng.client.get("/v1/models").status_code == 503
        eng.wait()
        assert time.monotonic() - t0 >= 0.3
        assert eng.client.get("/v1/models").status_code == 200
    finally:
        eng.stop()


def test_unhealthy_file(tmp_path):
    flag = tmp_path / "sick"
    eng = Engine(tmp_path, OSIRE_FAKE_UNHEALTHY_FILE=flag)
    try:
        eng.wait()
        flag.touch()
        assert httpx.get(f"{eng.url}/health").status_code == 503
        flag.unlink()
        assert httpx.get(f"{eng.url}/health").status_code == 200
    finally:
        eng.stop()


def test_headers_log_and_token_delay_and_cancel(tmp_path):
    log = tmp_path / "headers.jsonl"
    eng = Engine(tmp_path, OSIRE_FAKE_HEADERS_LOG=log, OSIRE_FAKE_TOKEN_DELAY=0.05)
    try:
        eng.wait()
        eng.client.get("/v1/models", headers={"X-Marker": "m1", "Cookie": "c=1"})
        # a slow stream the client abandons after two chunks: the engine notices
        with eng.client.stream("POST", "/v1/chat/completions", json={
                "model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100,
                "stream": True}) as r:
            times = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    times.append(time.monotonic())
                if len(times) == 3:
                    break
        assert times[2] - times[1] >= 0.03  # tokens are spaced by the delay
        deadline = time.monotonic() + 5
        while eng.client.get("/fake/stats").json()["streams_cancelled"] < 1:
            assert time.monotonic() < deadline, "engine did not notice the client going away"
            time.sleep(0.05)
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        marked = [e for e in entries if e["headers"].get("x-marker") == "m1"]
        assert marked and marked[0]["path"] == "/v1/models" and marked[0]["method"] == "GET"
        assert marked[0]["headers"]["authorization"] == f"Bearer {KEY}"
        assert marked[0]["headers"]["cookie"] == "c=1"
    finally:
        eng.stop()


def test_sigterm_exits_quickly_with_open_stream(tmp_path):
    eng = Engine(tmp_path, OSIRE_FAKE_TOKEN_DELAY=0.5)
    eng.wait()
    with eng.client.stream("POST", "/v1/completions", json={"model": "fake", "prompt": "x", "max_tokens": 100,
                                                            "stream": True}) as r:
        next(r.iter_lines())
        t0 = time.monotonic()
        assert eng.stop() == 0
        assert time.monotonic() - t0 < 4

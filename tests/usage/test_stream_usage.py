"""The proxy's reading of usage (proxy/usage.py): the extra usage event taken out only where the
proxy asked for it, every other byte passed as it came, however the chunks are cut."""
from __future__ import annotations

import json

import pytest

from jupyter_osire_llm.proxy.usage import RequestUsage, TokenTally, plan_usage, route_of

CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,' \
        b'"delta":{"content":"t%d "},"finish_reason":null}]}\n\n'
USAGE = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",' \
        b'"choices":[],"usage":{"prompt_tokens":7,"total_tokens":10,"completion_tokens":3}}\n\n'
DONE = b"data: [DONE]\n\n"
STREAM = b"".join(CHUNK % i for i in range(3)) + USAGE + DONE


def run(stream: bytes, cut: int, strip: bool) -> tuple[bytes, list[bytes], TokenTally]:
    tally = TokenTally(clock=lambda: 0.0)
    usage = RequestUsage(tally, "m", strip=strip)
    pieces = [stream[i:i + cut] for i in range(0, len(stream), cut)]
    sent = [usage.feed(p) for p in pieces]
    sent.append(usage.finish())
    usage.close(200)
    return b"".join(sent), sent, tally


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 50, len(STREAM)])
def test_the_usage_event_is_taken_out_only_where_the_proxy_asked(cut):
    out, _, tally = run(STREAM, cut, strip=True)
    assert out == STREAM.replace(USAGE, b"")
    assert tally.take()[("1970-01-01", "m")].__dict__ == \
        {"requests": 1, "prompt_tokens": 7, "completion_tokens": 3}
    out, sent, tally = run(STREAM, cut, strip=False)
    assert out == STREAM                   # the caller asked for it: passed, and counted
    assert all(s for s in sent[:-1])       # every chunk goes on at once, as it came
    assert tally.take()[("1970-01-01", "m")].prompt_tokens == 7


def test_stripping_sends_whole_events_at_once_and_keeps_crlf_streams():
    tally = TokenTally()
    usage = RequestUsage(tally, "m", strip=True)
    assert usage.feed(CHUNK % 0) == CHUNK % 0          # a whole event: not held
    crlf = USAGE.replace(b"\n\n", b"\r\n\r\n")
    assert usage.feed(crlf + DONE) == DONE
    assert usage.usage["completion_tokens"] == 3


def test_a_json_answer_is_counted_and_failures_are_not():
    tally = TokenTally(clock=lambda: 86400.0 * 365)
    usage = RequestUsage(tally, "m")
    usage.answer(json.dumps({"choices": [], "usage": {"prompt_tokens": 4,
                                                      "completion_tokens": 16}}).encode())
    usage.close(200)
    usage.close(200)                                     # once only
    failed = RequestUsage(tally, "m")
    failed.answer(b'{"error": {"message": "no"}}')
    failed.close(400)
    counts = tally.take()
    assert list(counts) == [("1971-01-01", "m")]
    assert counts[("1971-01-01", "m")].__dict__ == \
        {"requests": 1, "prompt_tokens": 4, "completion_tokens": 16}


def test_the_engine_is_asked_for_usage_only_for_streams_that_did_not_ask():
    tally = TokenTally()
    asked, usage = plan_usage(tally, "m", "/v1/chat/completions", {"model": "m", "stream": True})
    assert asked == {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert usage.strip
    asked, usage = plan_usage(tally, "m", "/v1/completions?x=1",
                              {"stream": True, "stream_options": {"include_usage": False,
                                                                  "continuous_usage_stats": True}})
    assert asked["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    for path, payload in [("/v1/chat/completions", {"stream": True,
                                                    "stream_options": {"include_usage": True}}),
                          ("/v1/chat/completions", {"stream": False}),
                          ("/v1/embeddings", {"stream": True}),
                          ("/v1/chat/completions", {"stream": True, "stream_options": "bad"}),
                          ("/v1/chat/completions", None)]:
        asked, usage = plan_usage(tally, "m", path, payload)
        assert asked is None and not usage.strip, (path, payload)
    assert route_of("/v1/chat/completions/?a=b") == "chat/completions"


def test_running_totals_count_once_and_responses_api_usage_is_read():
    tally = TokenTally(clock=lambda: 0.0)
    usage = RequestUsage(tally, "m")
    for n in (1, 2, 3):   # vLLM's continuous usage statistics: running totals on each chunk
        usage.feed(b'data: {"choices":[{"index":0}],"usage":{"prompt_tokens":5,'
                   b'"completion_tokens":%d}}\n\n' % n)
    usage.close(200)
    assert tally.take()[("1970-01-01", "m")].completion_tokens == 3
    responses = RequestUsage(tally, "m")
    responses.feed(b'event: response.completed\ndata: {"type":"response.completed",'
                   b'"response":{"usage":{"input_tokens":9,"output_tokens":2}}}\n\n')
    responses.close(200)
    assert tally.take()[("1970-01-01", "m")].__dict__ == \
        {"requests": 1, "prompt_tokens": 9, "completion_tokens": 2}

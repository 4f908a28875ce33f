"""Router: selection, failure rotation and the statuses it raises (no server, no HTTP)."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from proxy_support import FakeSource
from jupyter_osire_llm.proxy.endpoints import Endpoint, ModelStatus
from jupyter_osire_llm.errors import ModelNotReady, NotFound, UpstreamError
from jupyter_osire_llm.proxy.router import Router

A = Endpoint("m", "http://a:1", "ka", "d1", "101")
B = Endpoint("m", "http://b:1", "kb", "d1", "102")
C = Endpoint("m", "http://c:1", "kc", "d2", "201")
OTHER = Endpoint("o", "http://o:1", "ko", "d3", "301")


def router(*endpoints: Endpoint, statuses=None, static=None) -> Router:
    return Router(FakeSource(list(endpoints), statuses or {}), static or {},
                  rng=random.Random(7))


def test_single_ready_replica_is_chosen():
    assert router(A, OTHER).resolve("m") == A


def test_power_of_two_choices_prefers_less_loaded():
    r = router(A, B)
    for _ in range(5):
        r.acquire(A)
    assert {r.resolve("m") for _ in range(50)} == {B}
    r.release(A)
    assert r.in_flight(A) == 4


def test_load_spreads_over_replicas():
    r = router(A, B, C)
    picks = Counter()
    for _ in range(300):
        chosen = r.resolve("m")
        r.acquire(chosen)  # never released: the least loaded keeps winning
        picks[chosen.url] += 1
    assert max(picks.values()) - min(picks.values()) <= 2


def test_failed_replica_leaves_rotation_until_healthy():
    r = router(A, B)
    r.mark_failed(A)
    assert {r.resolve("m") for _ in range(30)} == {B}
    assert r.failed() == [A]
    r.mark_healthy(A)
    assert {r.resolve("m") for _ in range(50)} == {A, B}


def test_failed_replicas_are_last_resort_and_exclude_is_respected():
    r = router(A, B)
    r.mark_failed(A)
    r.mark_failed(B)
    assert r.resolve("m") in (A, B)  # nothing healthy: try anyway rather than refuse
    assert r.resolve("m", exclude=[A.url]) == B
    with pytest.raises(UpstreamError, match="any of the 2 replica"):
        r.resolve("m", exclude=[A.url, B.url])


def test_unknown_model_lists_callable_ones():
    r = router(A, OTHER, static={"s": {"url": "http://s:1"}})
    with pytest.raises(NotFound) as info:
        r.resolve("zzz")
    assert "callable models: m, o, s" in info.value.message
    assert info.value.to_openai()["error"]["available"] == ["m", "o", "s"]
    assert info.value.status == 404


def test_no_models_at_all_says_so():
    with pytest.raises(NotFound, match="none \\(launch one first\\)"):
        router().resolve("m")


@pytest.mark.parametrize("state,retry", [("queued", 15), ("starting", 5), ("ready", 5)])
def test_not_ready_is_503_with_state_reason_and_retry_after(state, retry):
    r = router(statuses={"m": ModelStatus("m", state, "d1", reason="Resources")})
    with pytest.raises(ModelNotReady) as info:
        r.resolve("m")
    error = info.value
    assert error.status == 503 and error.retry_after == retry
    assert "d1" in error.message and "(Resources)" in error.message
    assert (state in error.message) or "health check" in error.message


def test_static_endpoints_are_routed_like_replicas():
    r = router(static={"ext": {"url": "https://api.example.org/v1/", "api_key": "sk",
                               "model": "upstream-name"},
                       "plain": {"url": "http://p:2"}})
    ext = r.resolve("ext")
    assert (ext.url, ext.key, ext.deployment_id) == ("https://api.example.org", "sk", "static:ext")
    assert r.upstream_model(ext) == "upstream-name"
    assert r.upstream_model(r.resolve("plain")) is None and r.resolve("plain").key is None
    with pytest.raises(NotFound):  # engine passthrough is for the user's own deployments
        r.for_deployment("static:ext")
    assert r.callable_models() == ["ext", "plain"]


def test_bad_static_entries_are_reported_and_skipped():
    r = router(static={"bad": {"url": "ftp://x"}, "worse": "http://x", "ok": {"url": "http://o"}})
    assert list(r.static) == ["ok"] and len(r.problems) == 2


def test_for_deployment_picks_its_replicas_only():
    r = router(A, B, C)
    assert r.for_deployment("d2") == C
    assert r.for_deployment("d1") in (A, B)
    with pytest.raises(NotFound):
        r.for_deployment("nope")


def test_forget_gone_drops_marks_of_stopped_engines():
    source = FakeSource([A, B])
    r = Router(source, {})
    r.mark_failed(A)
    source.endpoints = [B]
    r.forget_gone()
    assert r.failed() == []


def test_release_never_goes_negative():
    r = router(A)
    r.release(A)
    assert r.in_flight(A) == 0

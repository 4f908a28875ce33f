"""Launch on demand cannot storm (issue 17, item 8).

A model that fails at start-up is not launched again by every new request: its failed start-ups
count against ``max_restarts`` with the restart backoff, and then the caller gets a clear error
with the reason. A GET (a link or an image tag on another site) cannot launch anything: the
OpenAI inference routes take POST only.

A real Jupyter server on real Slurm, the fake engine (``fake-crash`` exits at start), the
official ``openai`` client; the rules' timing on a fake clock.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import replace

import openai
import pytest

from jupyter_osire_llm.errors import Conflict, ModelNotReady
from jupyter_osire_llm.deployments.on_demand import OnDemand
from jupyter_osire_llm.server.settings import Timing
from jupyter_osire_llm.deployments.states import FAILED, READY, STOPPED, Deployment, Replica
from jupyter_osire_llm.core.store import Store
from lifecycle_catalog import write_catalog
from server_process import JupyterServer
from service_factory import make_context, one_model_catalog


@pytest.fixture(scope="module")
def server(slurm_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storm")
    osire = {"scheduler": "slurm", "job_root": str(tmp / "jobs"),
             "catalog": str(write_catalog(tmp / "c.yaml")), "db_path": str(tmp / "s.sqlite"),
             "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0,
             "launch_on_demand": True, "max_deployments": 1, "max_restarts": 1,
             "restart_backoff": 1}
    jupyter = JupyterServer(tmp / "server", osire).start()
    yield jupyter
    try:
        jupyter.stop_all_deployments()
    finally:
        jupyter.stop()


def deployments(server: JupyterServer) -> list[dict]:
    code, listing = server.request("GET", "osire/api/deployments")
    assert code == 200, listing
    return listing["deployments"]


def get(server: JupyterServer, path: str) -> tuple[int, dict, dict]:
    request = urllib.request.Request(server.url + path,
                                     headers={"Authorization": f"token {server.token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def test_a_get_to_an_inference_route_is_405_and_launches_nothing(server):
    before = deployments(server)
    for path in ("osire/v1/chat/completions?model=fake-chat", "osire/v1/completions?model=x",
                 "osire/v1/embeddings?model=fake-chat"):
        code, headers, body = get(server, path)
        assert code == 405, (path, body)
        assert headers["Allow"] == "POST"
        error = body["error"]
        assert error["code"] == "method_not_allowed" and error["param"] == "method"
        assert "take POST" in error["message"] and error["type"] == "invalid_request_error"
    code, _, models = get(server, "osire/v1/models")      # the read routes stay GET
    assert code == 200 and models["object"] == "list"
    assert deployments(server) == before                   # nothing launched, nothing submitted


def test_a_model_failing_at_start_is_not_launched_by_every_request(server):
    server.stop_all_deployments()     # whatever an earlier test left: the user's limit is 1
    for d in deployments(server):
        server.wait_state(d["id"], {"stopped", "failed"})
    client = openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token,
                           max_retries=0, timeout=60)
    answers: list[tuple[int, str]] = []
    deadline = time.monotonic() + 180

    def crash_launches() -> list[dict]:
        launched = [d for d in deployments(server) if d["model"] == "fake-crash"]
        # max_restarts 1: two launches in a row that fail at start-up, never more
        assert len(launched) <= 2, (launched, answers)
        return launched

    while not answers or answers[-1][0] != 409:
        assert time.monotonic() < deadline, f"never refused; answers: {answers[-5:]}"
        try:
            client.chat.completions.create(model="fake-crash", max_tokens=1,
                                           messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("a crashing model answered")
        except openai.APIStatusError as exc:
            answers.append((exc.status_code, exc.response.json()["error"]["message"]))
        crash_launches()
        time.sleep(0.3)    # the pace of a client that retries, not a wait for a state
    launched = crash_launches()
    assert len(launched) == 2 and all(d["state"] == "failed" for d in launched), launched
    message = answers[-1][1]
    assert "failed at start-up 2 time(s) in a row" in message, message
    assert "exit code 3" in message and "not launched on demand again" in message, message
    assert "launch it by hand" in message
    assert {code for code, _ in answers} <= {503, 409}, answers
    for _ in range(5):                                    # and it stays so
        with pytest.raises(openai.ConflictError):
            client.chat.completions.create(model="fake-crash", max_tokens=1,
                                           messages=[{"role": "user", "content": "hi"}])
    assert len(crash_launches()) == 2


# -- the rules, on a fake clock -----------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 50_000.0

    def __call__(self) -> float:
        return self.now


def failed(i: int, at: float, reason: str = "job failed at start-up (exit code 3)",
           **extra) -> Deployment:
    replica = Replica(0, f"/f{i}", job_id=str(i), state=FAILED, reason=reason)
    return Deployment(id=f"d{i}", model="m", created=float(i), resources={}, updated=at,
                      replicas=(replica,), state=FAILED, reason=reason, **extra)


def on_demand_over(tmp_path, records: list[Deployment], clock: Clock) -> OnDemand:
    store = Store(tmp_path / "s.sqlite")
    for d in records:
        assert store.insert("deployments", d.id, d.created, d.to_doc())
    store.close()
    return make_context(tmp_path, one_model_catalog("true"), launch_on_demand=True,
                        max_restarts=2, restart_backoff=10, timing=Timing(clock=clock)).on_demand


def test_failed_start_ups_wait_their_backoff_then_stop_launches(tmp_path):
    clock = Clock()
    now = clock.now
    policies = on_demand_over(tmp_path, [failed(1, now - 100), failed(2, now - 4)], clock)
    with pytest.raises(ModelNotReady) as info:     # two failures: 10 x 2 s after the last
        policies._hold_failing("m")
    assert info.value.retry_after == 16
    assert "failed at start-up 2 time(s) in a row (last: job failed at start-up (exit code " \
           "3))" in info.value.message
    assert "tries it again in 16 s (try 3 of 3)" in info.value.message
    clock.now += 16
    policies._hold_failing("m")                    # its time has come: it may be launched

    policies = on_demand_over(tmp_path / "b", [failed(1, now - 900), failed(2, now - 800),
                                              failed(3, now - 700)], clock)
    with pytest.raises(Conflict) as refused:       # max_restarts 2: three in a row, no more
        policies._hold_failing("m")
    assert "not launched on demand again" in refused.value.message
    assert refused.value.field == "model"


def test_a_start_up_that_served_or_a_stop_by_the_user_breaks_the_row(tmp_path):
    clock = Clock()
    now = clock.now
    served = replace(failed(2, now - 50), replicas=(
        Replica(0, "/f", job_id="2", state=FAILED, reason="engine crashed", ready_at=now - 90),))
    stopped = replace(failed(3, now - 40), state=STOPPED, stop_requested=True,
                      stop_reason="stopped by user")
    records = [failed(1, now - 60), served, failed(4, now - 30), failed(5, now - 20),
               failed(6, now - 10, abort_reason="submission failed")]
    policies = on_demand_over(tmp_path, records, clock)
    assert [why for _, why in policies.start_failures("m")] == \
        ["job failed at start-up (exit code 3)"] * 3
    with pytest.raises(Conflict):
        policies._hold_failing("m")
    policies = on_demand_over(tmp_path / "b", [failed(1, now - 60), stopped], clock)
    assert policies.start_failures("m") == []      # the user stopped the newest: no row
    ready = replace(failed(7, now), state=READY, replicas=(
        Replica(0, "/f", job_id="7", state=READY, ready_at=now),))
    policies = on_demand_over(tmp_path / "c", [failed(1, now - 60), ready], clock)
    assert policies.start_failures("m") == []

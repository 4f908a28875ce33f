"""Lifecycle policies on real Slurm with the fake engine: idle shutdown, launch on demand,
auto-restart, renewal before the time limit, scaling under load.

Each test runs a real Jupyter server and calls it with the official ``openai`` client. Waits are
on states (with generous timeouts), never on the wall clock; the idle timeouts are a few seconds
so that the traffic that must keep a deployment alive comes many times within one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import openai
import pytest

from lifecycle_catalog import write_catalog
from server_process import JupyterServer

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture
def make_server(tmp_path):
    servers: list[JupyterServer] = []

    def make(**policy: Any) -> JupyterServer:
        osire = {"scheduler": "slurm", "job_root": str(tmp_path / "jobs"),
                 "catalog": str(write_catalog(tmp_path / "c.yaml", policies=True)),
                 "db_path": str(tmp_path / f"state{len(servers)}.sqlite"),
                 "monitor_fast_interval": 0.2, "monitor_slow_interval": 1.0,
                 "max_deployments": 3, "max_replicas": 3, **policy}
        server = JupyterServer(tmp_path / f"server{len(servers)}", osire)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        try:
            if server.proc is not None:
                server.stop_all_deployments()
        finally:
            server.stop()


def sdk(server: JupyterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token,
                         max_retries=0, timeout=60)


def launch(server: JupyterServer, model: str, **extra: Any) -> dict:
    code, body = server.request("POST", "osire/api/deployments", {"model": model, **extra})
    assert code == 201, body
    return body


def chat(client: openai.OpenAI, model: str, tokens: int = 2) -> str:
    reply = client.chat.completions.create(model=model, max_tokens=tokens,
                                           messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def status_of(server: JupyterServer, path: str) -> int:
    """The status of a GET with the token (any body: metrics are text)."""
    request = urllib.request.Request(server.url + path,
                                     headers={"Authorization": f"token {server.token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def squeue_jobs(deployment_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True,
                         text=True).stdout
    return [line.split()[0] for line in out.splitlines() if f"osire-{deployment_id}-" in line]


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.2)


class RequestLoop:
    """Chat requests one after another, through /osire/v1, counting failures."""

    def __init__(self, server: JupyterServer, model: str) -> None:
        self.client, self.model = sdk(server), model
        self.ok, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RequestLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                assert chat(self.client, self.model).startswith("t0")
                self.ok += 1
            except Exception as exc:  # every failure is counted and reported
                self.failures.append(repr(exc))
            time.sleep(0.05)

    def wait_for(self, requests: int, timeout: float = 60) -> None:
        start = self.ok
        eventually(lambda: self.ok >= start + requests, timeout, f"{requests} more requests")


def live_replicas(d: dict) -> list[dict]:
    return [r for r in d["replicas"] if r["state"] not in ("stopped", "failed")]


# -- idle shutdown ------------------------------------------------------------------------------

def test_idle_shutdown_counts_only_inference_and_spares_pinned(make_server):
    server = make_server(idle_timeout=6)
    client = sdk(server)
    used = launch(server, "fake-slow-tokens")        # a long stream keeps it
    polled = launch(server, "fake-chat")             # health, metrics, listing do not
    pinned = launch(server, "fake-pinned")           # pinned in the catalog: exempt
    server.wait_state(used["id"], {"ready"}, timeout=90)
    tokens: list[str] = []

    def stream() -> None:   # 20 tokens at 0.5 s each: longer than the idle timeout
        chunks = client.chat.completions.create(
            model="fake-slow-tokens", max_tokens=20, stream=True,
            messages=[{"role": "user", "content": "a long answer"}])
        tokens.extend(c.choices[0].delta.content for c in chunks
                      if c.choices and c.choices[0].delta.content)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    for d in (polled, pinned):
        server.wait_state(d["id"], {"ready"}, timeout=90)
    stop = threading.Event()

    polls: list[int] = []

    def poll() -> None:   # what a dashboard does: none of it is inference
        while not stop.is_set():
            for path in ("osire/api/deployments", "osire/v1/models",
                         f"osire/engines/{polled['id']}/metrics",
                         f"osire/engines/{polled['id']}/health"):
                polls.append(status_of(server, path))
            time.sleep(0.3)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        ended = server.wait_state(polled["id"], {"stopped"}, timeout=90)
        assert ended["reason"].startswith("idle: no inference request for 6 s"), ended
        assert polls.count(200) >= 8, polls         # metrics and health answered meanwhile
        streamer.join(60)
        assert len(tokens) == 20                     # the stream ran to its last byte
        code, after = server.request("GET", f"osire/api/deployments/{used['id']}")
        assert after["state"] == "ready", after
        assert after["policy"]["idle_timeout"] == 6 and after["policy"]["idle_stop_in"] > 0
    finally:
        stop.set()
        poller.join(10)
    ended = server.wait_state(used["id"], {"stopped"}, timeout=90)
    assert "idle" in ended["reason"] and "idle" in ended["stop_reason"]
    eventually(lambda: squeue_jobs(used["id"]) == [] and squeue_jobs(polled["id"]) == [],
               what="idle jobs gone from squeue")
    code, kept = server.request("GET", f"osire/api/deployments/{pinned['id']}")
    assert kept["state"] == "ready" and kept["policy"]["pinned"] is True, kept
    assert kept["policy"]["idle_stop_in"] is None


def test_inference_resets_the_idle_timer(make_server):
    server = make_server(idle_timeout=6)
    client = sdk(server)
    d = launch(server, "fake-chat", idle_timeout=5)
    server.wait_state(d["id"], {"ready"}, timeout=90)
    for _ in range(30):               # one request per 0.5 s for 15 s: three idle timeouts
        assert chat(client, "fake-chat")
        time.sleep(0.5)
    code, body = server.request("GET", f"osire/api/deployments/{d['id']}")
    assert body["state"] == "ready", body
    assert body["policy"]["idle_timeout"] == 5 and body["policy"]["last_used"]
    ended = server.wait_state(d["id"], {"stopped"}, timeout=60)
    assert ended["reason"].startswith("idle: no inference request for 5 s")


# -- launch on demand ---------------------------------------------------------------------------

def test_launch_on_demand_from_a_cold_sdk_call(make_server):
    server = make_server(launch_on_demand=True)
    client = sdk(server)
    with pytest.raises(openai.APIStatusError) as info:
        chat(client, "fake-chat")
    assert info.value.status_code == 503
    assert int(info.value.response.headers["Retry-After"]) > 0
    message = info.value.response.json()["error"]["message"]
    assert "launched on demand" in message and ("queued" in message or "starting" in message)
    code, listing = server.request("GET", "osire/api/deployments")
    assert [d["model"] for d in listing["deployments"]] == ["fake-chat"]   # launched once

    def served() -> bool:
        try:
            return chat(client, "fake-chat").startswith("t0")
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc
            return False
    eventually(served, timeout=90, what="served once ready")
    code, listing = server.request("GET", "osire/api/deployments")
    assert len(listing["deployments"]) == 1


def test_launch_on_demand_waits_and_serves_in_one_call(make_server):
    server = make_server(launch_on_demand=True, launch_on_demand_wait=90)
    client = sdk(server)
    results: list[str] = []
    callers = [threading.Thread(target=lambda: results.append(chat(client, "fake-chat")))
               for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(120)
    assert len(results) == 3 and all(r.startswith("t0") for r in results), results
    code, listing = server.request("GET", "osire/api/deployments")
    assert len(listing["deployments"]) == 1, listing         # three callers, one launch


# -- restart ------------------------------------------------------------------------------------

def test_a_killed_engine_is_restarted_and_a_repeating_start_failure_is_not(make_server):
    server = make_server(restart_backoff=1, max_restarts=3)
    d = launch(server, "fake-chat")
    ready = server.wait_state(d["id"], {"ready"}, timeout=90)
    folder = Path(ready["replicas"][0]["folder"])
    first_job = ready["replicas"][0]["job_id"]
    pid = json.loads((folder / "endpoint.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted_and_ready() -> dict:
        code, body = server.request("GET", f"osire/api/deployments/{d['id']}")
        r = body["replicas"][0]
        return body if body["state"] == "ready" and r["job_id"] != first_job else {}
    body = eventually(restarted_and_ready, timeout=120, what="ready again after the restart")
    assert body["restarts"] == 1, body
    assert body["failures"] == ["engine crashed (killed by signal 9)"], body
    assert chat(sdk(server), "fake-chat").startswith("t0")
    eventually(lambda: squeue_jobs(d["id"]) == [body["replicas"][0]["job_id"]],
               what="only the new job in squeue")

    crash = launch(server, "fake-crash")
    ended = server.wait_state(crash["id"], {"failed"}, timeout=120)
    assert ended["restarts"] == 1, ended
    assert "not restarted: the same failure at start-up twice" in ended["reason"], ended


# -- renewal ------------------------------------------------------------------------------------

def test_renewal_before_the_time_limit_costs_no_request(make_server):
    server = make_server()   # renew_before 600 s: at most half of 2 minutes, 60 s after start
    d = launch(server, "fake-two-minutes")
    ready = server.wait_state(d["id"], {"ready"}, timeout=90)
    old_job = ready["replicas"][0]["job_id"]
    with RequestLoop(server, "fake-two-minutes") as loop:
        loop.wait_for(5)

        def renewed() -> dict:
            code, body = server.request("GET", f"osire/api/deployments/{d['id']}")
            old, new = body["replicas"][0], body["replicas"][-1]
            done = len(body["replicas"]) == 2 and old["state"] == "stopped" and \
                new["state"] == "ready" and new["replaces"] == 0
            return body if done else {}
        body = eventually(renewed, timeout=200, what="renewal")
        loop.wait_for(5)
    print(f"renewal under a request loop: {loop.ok} requests, {len(loop.failures)} failed")
    assert loop.failures == [], loop.failures
    assert "replaced by replica 1" in body["replicas"][0]["reason"], body
    assert body["state"] == "ready"
    eventually(lambda: old_job not in squeue_jobs(d["id"]), what="old job gone")
    assert squeue_jobs(d["id"]) == [body["replicas"][1]["job_id"]]


# -- scaling ------------------------------------------------------------------------------------

def test_scale_up_and_down_under_load(make_server):
    server = make_server()
    d = launch(server, "fake-chat")
    server.wait_state(d["id"], {"ready"}, timeout=90)
    code, error = server.request("PATCH", f"osire/api/deployments/{d['id']}", {"replicas": 9})
    assert code == 400 and error["error"]["param"] == "replicas", error
    code, error = server.request("PATCH", f"osire/api/deployments/{d['id']}", {"replicas": "2"})
    assert code == 400 and error["error"]["param"] == "replicas", error

    def ready_count(n: int) -> Callable[[], bool]:
        def check() -> bool:
            code, body = server.request("GET", f"osire/api/deployments/{d['id']}")
            live = live_replicas(body)
            return len(live) == n and all(r["state"] == "ready" for r in live) and \
                len(squeue_jobs(d["id"])) == n
        return check

    with RequestLoop(server, "fake-chat") as loop:
        loop.wait_for(5)
        code, body = server.request("PATCH", f"osire/api/deployments/{d['id']}",
                                    {"replicas": 3})
        assert code == 200 and body["policy"]["replicas_wanted"] == 3, body
        eventually(ready_count(3), timeout=120, what="3 ready replicas")
        loop.wait_for(10)
        code, body = server.request("PATCH", f"osire/api/deployments/{d['id']}",
                                    {"replicas": 1})
        assert code == 200 and body["policy"]["replicas_wanted"] == 1, body
        eventually(ready_count(1), timeout=120, what="back to 1 replica")
        loop.wait_for(5)
    print(f"scale 1 -> 3 -> 1 under a request loop: {loop.ok} requests, "
          f"{len(loop.failures)} failed")
    assert loop.failures == [], loop.failures
    code, body = server.request("GET", f"osire/api/deployments/{d['id']}")
    assert [r["index"] for r in live_replicas(body)] == [0]          # the newest drained away
    assert all(r["reason"] == "scaled down" for r in body["replicas"][1:]), body


def test_traffic_on_the_server_that_does_not_watch_keeps_the_deployment(make_server, tmp_path):
    watcher = make_server(idle_timeout=6, db_path=str(tmp_path / "shared.sqlite"))
    eventually(lambda: watcher.request("GET", "osire/api/health")[1]["monitor"]["watching"],
               what="the first server watches")
    other = make_server(idle_timeout=6, db_path=str(tmp_path / "shared.sqlite"))
    assert other.request("GET", "osire/api/health")[1]["monitor"]["watching"] is False
    d = launch(other, "fake-chat")
    eventually(lambda: watcher.request("GET", f"osire/api/deployments/{d['id']}")[0] == 200,
               what="the watcher reads the other server's launch from the shared state")
    watcher.wait_state(d["id"], {"ready"}, timeout=90)
    other.wait_state(d["id"], {"ready"}, timeout=30)     # and the other server reads that back
    client = sdk(other)
    for _ in range(30):     # one request per 0.5 s for 15 s, all through the other server
        assert chat(client, "fake-chat")
        time.sleep(0.5)
    code, body = watcher.request("GET", f"osire/api/deployments/{d['id']}")
    assert body["state"] == "ready" and body["policy"]["last_used"], body
    ended = watcher.wait_state(d["id"], {"stopped"}, timeout=60)
    assert ended["reason"].startswith("idle: no inference request for 6 s")

"""One replica across two nodes of one Slurm allocation, with the fake engine (fast): the job
script starts rank 0 here and a headless rank on the other node with srun; the replica is
reached at rank 0; each node's log is shown; a rank that dies fails the replica with that rank's
node and log tail; stop ends every rank; a request for more nodes than the partition has is
refused at launch.

Runs on the two-node test cluster (tests/two_nodes.py), a real Jupyter server and real Slurm.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lifecycle_catalog import FAKE_ENGINE
from server_process import JupyterServer
from two_nodes import rank_info, start_two_nodes

pytestmark = [pytest.mark.slurm, pytest.mark.root]


def _catalog(path: Path) -> Path:
    fake = f"{sys.executable} {FAKE_ENGINE}"
    path.write_text(yaml.safe_dump({
        "engines": {"fake-vllm": {"command": fake, "kind": "vllm", "guard": False}},
        "models": [
            {"name": "two-node", "model": "/models/fake", "engine": "fake-vllm",
             "resources": {"nodes": 2, "time": "00:10:00", "cpus": 1}},
            {"name": "three-node", "model": "/models/fake", "engine": "fake-vllm",
             "resources": {"nodes": 3, "time": "00:10:00", "cpus": 1}},
        ]}))
    return path


def _server(work: Path, **osire: object) -> JupyterServer:
    env = start_two_nodes()
    work.chmod(0o755)
    return JupyterServer(work / "server", {
        "scheduler": "slurm", "catalog": str(_catalog(work / "catalog.yaml")),
        "job_root": str(work / "jobs"), "db_path": str(work / "state.sqlite"),
        "monitor_fast_interval": 0.5, "max_restarts": 0, **osire},
        env={"SLURM_CONF": env["SLURM_CONF"]})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = _server(tmp_path_factory.mktemp("multinode")).start()
    try:
        yield server
    finally:
        server.stop_all_deployments()
        server.stop()


def _launch_ready(server: JupyterServer) -> dict:
    code, d = server.request("POST", "osire/api/deployments", {"model": "two-node"})
    assert code == 201, d
    ready = server.wait_state(d["id"], {"ready", "failed"}, timeout=120)
    assert ready["state"] == "ready", ready
    return ready


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_a_replica_spans_two_nodes_answers_at_rank_0_and_stops_every_rank(server):
    ready = _launch_ready(server)
    replica = ready["replicas"][0]
    folder = Path(replica["folder"])
    assert replica["node"] == "node[1-2]" and replica["host"] == "node1"   # the API at rank 0
    rank1 = rank_info(folder, 1)
    assert rank1["node"] == "node2"
    code, answer = server.request("POST", "osire/v1/chat/completions", {
        "model": "two-node", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert code == 200, answer
    code, logs = server.request("GET", f"osire/api/deployments/{ready['id']}/logs?tail=50")
    lines = logs["replicas"][0]["lines"]
    assert any(line.startswith("[rank 1] ") and "headless rank 1 on node2" in line
               for line in lines), lines
    job = (folder / "job.sh").read_text() if (folder / "job.sh").exists() else ""
    assert "--nnodes 2" in job and "--pipeline-parallel-size 2" in job
    server.request("DELETE", f"osire/api/deployments/{ready['id']}")
    stopped = server.wait_state(ready["id"], {"stopped", "failed"}, timeout=60)
    assert stopped["state"] == "stopped", stopped
    assert _gone(rank1["pid"]), "rank 1's engine outlived the stop"


def test_a_rank_that_dies_fails_the_replica_with_its_node_and_log(server):
    ready = _launch_ready(server)
    folder = Path(ready["replicas"][0]["folder"])
    rank1 = rank_info(folder, 1)
    os.kill(rank1["pid"], signal.SIGKILL)
    failed = server.wait_state(ready["id"], {"failed", "stopped"}, timeout=90)
    assert failed["state"] == "failed", failed
    assert failed["reason"] == "rank 1 on node node2 ended (killed by signal 9)", failed
    tail = failed["replicas"][0].get("log_tail") or ""
    assert "[rank 1] " in tail and "headless rank 1 on node2" in tail, tail


def test_more_nodes_than_the_partition_has_is_refused_and_nothing_submitted(server):
    env = {**os.environ, "SLURM_CONF": server.env["SLURM_CONF"]}
    before = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True,
                            text=True).stdout.split()
    code, error = server.request("POST", "osire/api/deployments", {"model": "three-node"})
    assert code == 400, error
    assert error["error"]["param"] == "resources.nodes"
    assert "has 2 node(s), resources.nodes asks for 3" in error["error"]["message"]
    after = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True,
                           text=True).stdout.split()
    assert after == before


def test_a_replica_that_lost_a_rank_is_restarted_on_two_nodes(tmp_path):
    server = _server(tmp_path, max_restarts=1, restart_backoff=1).start()
    try:
        ready = _launch_ready(server)
        first_job = ready["replicas"][0]["job_id"]
        os.kill(rank_info(Path(ready["replicas"][0]["folder"]), 1)["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = server.request("GET", f"osire/api/deployments/{ready['id']}")[1]
            if body["state"] == "ready" and body["replicas"][0]["job_id"] != first_job:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not ready again after the restart: {body}")
        assert body["restarts"] == 1
        assert body["failures"] == ["rank 1 on node node2 ended (killed by signal 9)"], body
        assert rank_info(Path(body["replicas"][0]["folder"]), 1)["node"] == "node2"
    finally:
        server.stop_all_deployments()
        server.stop()

